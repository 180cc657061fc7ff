"""Request quotas shared by every ingress replica: token buckets in one named Ray actor per app.

Each request takes one token from each of its buckets (its client's, and its user's), all or
none. Buckets kept in one replica's memory would let N replicas allow N times a limit, so the
truth is a :class:`QuotaBoard` actor that the ingress replicas share; each replica batches its
concurrent checks into one actor call (:class:`~ray_app.serving.batching.AdaptiveBatcher`) and
keeps a local copy of the buckets it was granted from, so a client already over its limit is
refused without a round trip. If the board does not answer within ``timeout_s`` the replica
decides alone (its local buckets still hold that replica's share) rather than refuse everyone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import ray

from ray_app.serving.batching import AdaptiveBatcher

log = logging.getLogger("ray.serve")

Take = tuple[tuple[str, int], ...]
"""One request's buckets: ``(key, per_min)`` pairs; a token is taken from each, or from none."""


class TokenBuckets:
    """Token buckets per key: ``per_min`` tokens a minute, burst of ``per_min``.

    The rate travels with each request, so a changed limit applies at once. Buckets live in a
    bounded LRU so a flood of distinct keys cannot exhaust memory; an evicted key starts full
    again (the client bucket, which a key-rotating client cannot escape, still holds).
    """

    def __init__(self, max_keys: int = 200_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, key: str, per_min: int, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(per_min), now))
        return min(float(per_min), tokens + (now - last) * per_min / 60.0)

    def wait(self, take: Take, now: float | None = None) -> float:
        """Seconds until every bucket of ``take`` holds a token (0.0 = it may go now)."""
        t = time.monotonic() if now is None else now
        return max(
            (max(0.0, (1.0 - self._level(k, n, t)) * 60.0 / n) for k, n in take), default=0.0
        )

    def take(self, take: Take, now: float | None = None) -> float:
        """Take one token from each bucket of ``take`` and return 0.0, or take none and return
        the seconds until all of them have one (the ``Retry-After``)."""
        t = time.monotonic() if now is None else now
        wait = self.wait(take, t)
        if wait > 0:
            return wait
        for key, per_min in take:
            self._buckets[key] = (self._level(key, per_min, t) - 1.0, t)
            self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0


class QuotaBoard:
    """The app's shared buckets (a named Ray actor; see :func:`board_name`)."""

    def __init__(self) -> None:
        self.buckets = TokenBuckets()

    def take_batch(self, takes: list[Take]) -> list[float]:
        """:meth:`TokenBuckets.take` for each request, in order."""
        now = time.monotonic()
        return [self.buckets.take(t, now) for t in takes]


def board_name(app_name: str) -> str:
    """The Ray actor name of ``app_name``'s quota board."""
    return f"ray_app_quotas:{app_name}"


def connect_board(app_name: str) -> Any:
    """A handle to ``app_name``'s board, created by the first replica that asks.

    Not detached: the board shares the fate of the replica that created it, so deleting the
    app removes it; if that replica dies, the next call finds the board gone and a new one is
    created (its buckets start full).
    """
    actor: Any = ray.remote(QuotaBoard)
    try:
        return actor.options(name=board_name(app_name), get_if_exists=True, num_cpus=0).remote()
    except ValueError:  # another replica created it between the lookup and the creation
        return ray.get_actor(board_name(app_name))


class Quotas:
    """A replica's view of the shared quotas (create it on the replica's event loop).

    ``app_name`` None (outside a Serve replica, as in unit tests) keeps the buckets local.
    """

    def __init__(self, app_name: str | None, timeout_s: float = 1.0) -> None:
        self.app_name = app_name
        self.timeout_s = timeout_s
        self.local = TokenBuckets()
        self._board: Any = None
        self._connecting: asyncio.Task[None] | None = None
        self._batcher: AdaptiveBatcher[Take, float] = AdaptiveBatcher(
            self._ask_board, max_batch_size=256, max_in_flight=2
        )

    def connect(self, timeout_s: float = 60.0) -> None:
        """Find or create the board and wait until it answers (at replica start, so the first
        requests already count cluster-wide); on failure requests start it later."""
        if self.app_name is None:
            return
        try:
            board = connect_board(self.app_name)
            ray.get(board.take_batch.remote([]), timeout=timeout_s)
            self._board = board
        except Exception as exc:
            log.warning("quota board %s not reachable yet: %r", self.app_name, exc)

    async def _connect(self) -> None:
        assert self.app_name is not None
        try:
            # Finding or creating a named actor blocks on the GCS, and a new actor's process
            # takes seconds to start: off the request path, which decides locally meanwhile.
            board = await asyncio.to_thread(connect_board, self.app_name)
            await board.take_batch.remote([])
            self._board = board
        except Exception as exc:
            log.warning("quota board %s not reachable: %r", self.app_name, exc)

    def _board_ready(self) -> bool:
        if self._board is not None:
            return True
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return False

    async def _ask_board(self, takes: list[Take]) -> Sequence[float]:
        board = self._board
        try:
            waits: list[float] = await asyncio.wait_for(
                board.take_batch.remote(takes), timeout=self.timeout_s
            )
        except TimeoutError:
            raise  # slow, not gone: keep the handle
        except Exception:
            self._board = None  # the board died (with the replica that made it): find anew
            raise
        return waits

    async def take(self, take: Take) -> float:
        """0.0 if the request may go (its tokens are taken), else seconds to wait."""
        # Locally granted tokens are a lower bound of the cluster's: a bucket empty here is
        # empty on the board too, so a flood is refused without a round trip.
        if self.app_name is None:
            return self.local.take(take)
        wait = self.local.wait(take)
        if wait > 0 or not self._board_ready():
            return wait or self.local.take(take)
        try:
            wait = await self._batcher.submit(take)
        except Exception as exc:  # board gone or slow: this replica decides alone
            log.warning("quota board unavailable (%s); deciding locally", type(exc).__name__)
            return self.local.take(take)
        if wait == 0:
            self.local.take(take)
        return wait
