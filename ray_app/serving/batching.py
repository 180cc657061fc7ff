"""Adaptive request batching: no added delay when idle, large batches when busy.

``@serve.batch`` forms a batch as soon as its wait timeout ends, *before* a concurrency slot is
free, so with a zero timeout every request becomes its own batch and then queues for a slot;
a positive timeout instead taxes every request at low load. This batcher waits for a free slot
first and only then takes everything queued: one request alone goes out at once, and while
``max_in_flight`` batches are busy downstream, arrivals pile up and leave together as the next
batch (the same idea as Nagle's algorithm or Triton's dynamic batcher with zero delay). What
each choice measured is in BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class AdaptiveBatcher(Generic[T, R]):
    """Coalesce concurrent :meth:`submit` calls into calls of ``handle(list_of_items)``.

    ``handle`` must return one result per item, in order; if it raises, every caller in that
    batch gets the exception. Create and use it inside one event loop (a Serve replica's).
    """

    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[Sequence[R]]],
        max_batch_size: int = 32,
        max_in_flight: int = 2,
    ) -> None:
        if max_batch_size < 1 or max_in_flight < 1:
            raise ValueError("max_batch_size and max_in_flight must be >= 1")
        self._handle = handle
        self.max_batch_size = max_batch_size
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._freed: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # asyncio keeps only weak refs to tasks

    def configure(
        self, max_batch_size: int | None = None, max_in_flight: int | None = None
    ) -> None:
        """Change the limits at run time (from ``reconfigure``); they apply to the next batch."""
        if max_batch_size is not None:
            if max_batch_size < 1:
                raise ValueError("max_batch_size must be >= 1")
            self.max_batch_size = max_batch_size
        if max_in_flight is not None:
            if max_in_flight < 1:
                raise ValueError("max_in_flight must be >= 1")
            self.max_in_flight = max_in_flight
            if self._freed is not None:
                self._freed.set()  # a raised cap may free the waiting worker

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._freed is None:
            self._queue, self._freed = asyncio.Queue(), asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._form_batches(self._queue, self._freed))
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.put_nowait((item, fut))
        return await fut

    async def _form_batches(
        self, queue: asyncio.Queue[tuple[T, asyncio.Future[R]]], freed: asyncio.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            # Hold the first arrival until a slot is free; whatever queues meanwhile joins it.
            while self._in_flight >= self.max_in_flight:
                freed.clear()
                await freed.wait()
            while len(batch) < self.max_batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            live = [(it, f) for it, f in batch if not f.cancelled()]
            if not live:
                continue
            self._in_flight += 1
            task = loop.create_task(self._run(live, freed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]], freed: asyncio.Event) -> None:
        try:
            results = await self._handle([it for it, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch handler returned {len(results)} results for {len(batch)} items"
                )
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
        except asyncio.CancelledError:
            for _, fut in batch:
                fut.cancel()
            raise
        except Exception as exc:  # every caller in the batch must hear about it
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        finally:
            self._in_flight -= 1
            freed.set()
