"""Open the state store a :class:`~ray_app.state.config.StateConfig` names."""

from __future__ import annotations

from ray_app.state.actor_store import ActorStateStore
from ray_app.state.config import StateConfig
from ray_app.state.redis_store import RedisStateStore
from ray_app.state.store import StateStore


def open_store(config: StateConfig) -> StateStore:
    """The embedded actor store (Ray must be initialised) or the Redis store."""
    if config.kind == "redis":
        return RedisStateStore(config)
    return ActorStateStore(config)
