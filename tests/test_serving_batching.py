"""Adaptive batching and the vectorised MMR, without Ray."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_app.serving.batching import AdaptiveBatcher
from ray_app.serving.reranker import GenreIndex, mmr


class Downstream:
    """A fake router: records each batch, answers after ``delay_s``."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.batches: list[list[int]] = []
        self.in_flight = 0
        self.max_seen_in_flight = 0

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.in_flight += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail:
                raise RuntimeError("router down")
            return [i * 10 for i in items]
        finally:
            self.in_flight -= 1


def test_a_lone_request_goes_out_alone_and_at_once() -> None:
    async def run() -> tuple[list[int], list[list[int]], list[list[int]]]:
        down = Downstream()
        b = AdaptiveBatcher(down, max_batch_size=8, max_in_flight=1)
        first = asyncio.ensure_future(b.submit(0))
        for _ in range(5):  # let the loop run ready callbacks, with no time passing
            await asyncio.sleep(0)
        # already sent: a batcher that waited on any timer would not have sent it yet
        sent_before_any_timer = list(down.batches)
        out = [await first] + [await b.submit(i) for i in range(1, 3)]  # never concurrent
        return out, sent_before_any_timer, down.batches

    out, early, batches = asyncio.run(run())
    assert early == [[0]]
    assert out == [0, 10, 20]
    assert batches == [[0], [1], [2]]


def test_arrivals_while_busy_leave_together_in_order() -> None:
    async def run() -> tuple[list[int], Downstream]:
        down = Downstream(delay_s=0.05)
        b = AdaptiveBatcher(down, max_batch_size=4, max_in_flight=1)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.01)  # the first one is now with the (slow) router
        rest = await asyncio.gather(*(b.submit(i) for i in range(1, 10)))
        return [await first, *rest], down

    out, down = asyncio.run(run())
    assert out == [i * 10 for i in range(10)]  # each caller gets its own answer
    # the first goes alone (slot free), the rest queue behind it and leave in batches of <= 4
    assert down.batches[0] == [0]
    assert [len(x) for x in down.batches[1:]] == [4, 4, 1]
    assert [i for b in down.batches for i in b] == list(range(10))
    assert down.max_seen_in_flight == 1


def test_in_flight_cap_and_runtime_reconfigure() -> None:
    async def run() -> tuple[Downstream, AdaptiveBatcher[int, int]]:
        down = Downstream(delay_s=0.02)
        b = AdaptiveBatcher(down, max_batch_size=2, max_in_flight=3)
        await asyncio.gather(*(b.submit(i) for i in range(20)))
        assert down.max_seen_in_flight == 3
        b.configure(max_batch_size=16, max_in_flight=1)
        down.max_seen_in_flight = 0
        down.batches.clear()
        await asyncio.gather(*(b.submit(i) for i in range(20)))
        return down, b

    down, b = asyncio.run(run())
    assert down.max_seen_in_flight == 1
    assert max(len(x) for x in down.batches) == 16
    with pytest.raises(ValueError, match="max_batch_size"):
        b.configure(max_batch_size=0)


def test_a_failing_batch_fails_its_callers_only() -> None:
    async def run() -> tuple[list[object], list[int]]:
        down = Downstream(delay_s=0.01, fail=True)
        b = AdaptiveBatcher(down, max_batch_size=8, max_in_flight=1)
        failed = await asyncio.gather(*(b.submit(i) for i in range(5)), return_exceptions=True)
        down.fail = False
        ok = await asyncio.gather(*(b.submit(i) for i in range(3)))
        return list(failed), list(ok)

    failed, ok = asyncio.run(run())
    assert all(isinstance(e, RuntimeError) and "router down" in str(e) for e in failed)
    assert ok == [0, 10, 20]  # the batcher keeps working after a failed batch


def test_wrong_result_count_is_an_error_not_a_hang() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def run() -> list[object]:
        b = AdaptiveBatcher(short, max_batch_size=8, max_in_flight=1)
        return list(await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True))

    res = asyncio.run(run())
    assert len(res) == 2
    assert all(
        isinstance(e, RuntimeError) and "returned 1 results for 2 items" in str(e) for e in res
    )


GENRES = ["Action", "Drama", "Comedy", "Kids", "Horror", "SciFi", "Romance"]


@settings(max_examples=200, deadline=None)
@given(
    catalog=st.dictionaries(
        st.sampled_from([f"m{i}" for i in range(40)]),
        st.lists(st.sampled_from(GENRES), max_size=3, unique=True),
        max_size=40,
    ),
    items=st.lists(st.sampled_from([f"m{i}" for i in range(50)]), max_size=30, unique=True),
    k=st.integers(1, 25),
    diversity=st.floats(0.0, 1.0),
)
def test_vectorised_mmr_equals_the_reference(
    catalog: dict[str, list[str]], items: list[str], k: int, diversity: float
) -> None:
    # items may lack genres (m40..m49 never have any) and genre lists may be empty
    assert GenreIndex(catalog).mmr(items, k, diversity) == mmr(items, catalog, k, diversity)


def test_genre_index_known_answer() -> None:
    genres = {"a1": ["Action"], "a2": ["Action"], "a3": ["Action"], "b1": ["Drama"], "c1": ["Kids"]}
    idx = GenreIndex(genres)
    items = ["a1", "a2", "a3", "b1", "c1"]
    assert idx.mmr(items, 3, 0.0) == ["a1", "a2", "a3"]
    assert idx.mmr(items, 3, 0.7) == ["a1", "b1", "c1"]
    assert GenreIndex({}).mmr(items, 3, 0.9) == ["a1", "a2", "a3"]
