"""The embedded state store: a named Ray actor holding a :class:`MemoryState`.

Nothing to install. The actor is found by name (``StateConfig.actor_name`` in
``StateConfig.namespace``), so the state consumer and every serving replica share it; detached
(the default) it outlives whoever created it, so a replica or consumer restart keeps the state.
It lives in one node's memory: use Redis for more than one node.

The actor is never restarted in place (a restarted actor would be empty while the consumer
carried on past the events it lost). If it dies, calls fail: serving answers without fresh
history and opens the store again later, and a restarted state consumer finds the new, empty
store without offsets and rebuilds it from the beginning of the topics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray

from ray_app.state.config import StateConfig
from ray_app.state.store import (
    Activity,
    AppendResult,
    HistoryItem,
    MemoryState,
    StateSize,
    StateStore,
)


@ray.remote(num_cpus=0, max_restarts=0)
class StateActor:
    """Holds the state; every method is one short, non-blocking call."""

    def __init__(self, max_history: int, half_life_s: float) -> None:
        self.state = MemoryState(max_history, half_life_s)

    def append(self, events: list[Activity]) -> AppendResult:
        return self.state.append(events)

    def histories(self, user_ids: list[str]) -> list[list[HistoryItem]]:
        return self.state.histories(user_ids)

    def trending(self, k: int, now: float) -> list[tuple[str, float]]:
        return self.state.trending(k, now)

    def offsets(self) -> dict[tuple[str, int], int]:
        return self.state.offsets()

    def size(self) -> StateSize:
        return self.state.size()

    def clear(self) -> None:
        self.state.clear()


class ActorStateStore(StateStore):
    """Client of the named :class:`StateActor` (created on first use). Ray must be initialised."""

    def __init__(self, config: StateConfig) -> None:
        self.config = config
        options: dict[str, Any] = {
            "name": config.actor_name,
            "namespace": config.namespace,
            "get_if_exists": True,
        }
        if config.detached:
            options["lifetime"] = "detached"
        self.actor = StateActor.options(**options).remote(  # type: ignore[attr-defined]
            config.max_history, config.trend_half_life_s
        )

    def append(self, events: Sequence[Activity]) -> AppendResult:
        """See :meth:`StateStore.append`."""
        result: AppendResult = ray.get(self.actor.append.remote(list(events)))
        return result

    def histories(self, user_ids: Sequence[str]) -> list[list[HistoryItem]]:
        """See :meth:`StateStore.histories`."""
        got: list[list[HistoryItem]] = ray.get(self.actor.histories.remote(list(user_ids)))
        return got

    async def histories_async(self, user_ids: Sequence[str]) -> list[list[HistoryItem]]:
        """See :meth:`StateStore.histories_async`: awaits the actor call directly."""
        got: list[list[HistoryItem]] = await self.actor.histories.remote(list(user_ids))
        return got

    def trending(self, k: int, now: float) -> list[tuple[str, float]]:
        """See :meth:`StateStore.trending`."""
        got: list[tuple[str, float]] = ray.get(self.actor.trending.remote(k, now))
        return got

    def offsets(self) -> dict[tuple[str, int], int]:
        """See :meth:`StateStore.offsets`."""
        got: dict[tuple[str, int], int] = ray.get(self.actor.offsets.remote())
        return got

    def size(self) -> StateSize:
        """See :meth:`StateStore.size`."""
        got: StateSize = ray.get(self.actor.size.remote())
        return got

    def clear(self) -> None:
        """See :meth:`StateStore.clear`."""
        ray.get(self.actor.clear.remote())

    def destroy(self) -> None:
        """Kill the actor and its state (a detached actor otherwise lives until Ray stops)."""
        ray.kill(self.actor)
