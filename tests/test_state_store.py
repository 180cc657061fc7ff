"""The state-store contract, run against both implementations: the embedded Ray actor and a real
``redis-server`` that the fixture starts on a free port."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ray_app.errors import UserError
from ray_app.state.config import StateConfig
from ray_app.state.open_store import open_store
from ray_app.state.redis_store import RedisStateStore
from ray_app.state.store import Activity, MemoryState, StateStore

pytestmark = pytest.mark.integration

HOUR = 3600.0


@pytest.fixture(params=["actor", "redis"])
def make_store(request: pytest.FixtureRequest) -> Iterator[object]:
    """A factory of fresh, empty stores of one kind (each its own actor name / key prefix)."""
    made: list[StateStore] = []

    def make(**fields: object) -> StateStore:
        tag = uuid.uuid4().hex[:10]
        if request.param == "redis":
            url = request.getfixturevalue("redis_url")
            cfg = StateConfig(kind="redis", url=url, key_prefix=f"t{tag}:", **fields)  # type: ignore[arg-type]
        else:
            request.getfixturevalue("ray_session")
            cfg = StateConfig(kind="actor", actor_name=f"t{tag}", detached=False, **fields)  # type: ignore[arg-type]
        store = open_store(cfg)
        made.append(store)
        return store

    yield make
    for s in made:
        s.clear()
        s.close()


def ev(
    user: str, item: str, ts: float, offset: int, *, rating: float | None = None, partition: int = 0
) -> Activity:
    return Activity(
        user,
        item,
        ts,
        "rate" if rating is not None else "watch",
        "movielog",
        partition,
        offset,
        rating,
    )


def test_history_is_newest_first_distinct_and_bounded(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(max_history=3)
    events = [
        ev("u1", "a", 10, 0),
        ev("u1", "b", 20, 1),
        ev("u1", "a", 30, 2),  # watched again: moves to the front, still one entry
        ev("u1", "c", 40, 3, rating=4.5),
        ev("u1", "d", 50, 4),  # fourth distinct item: the oldest (b) is dropped
        ev("u2", "a", 15, 5),
    ]
    assert store.append(events).applied == 6
    h1, h2, h3 = store.histories(["u1", "u2", "nobody"])
    assert [(h.item_id, h.ts) for h in h1] == [("d", 50), ("c", 40), ("a", 30)]
    assert [h.rating for h in h1] == [None, 4.5, None]
    assert [h.item_id for h in h2] == ["a"]
    assert h3 == []
    size = store.size()
    assert (size.users, size.entries, size.items) == (2, 4, 4)


def test_equal_times_order_by_item_id_descending(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    store.append([ev("u1", "b", 10, 0), ev("u1", "c", 10, 1), ev("u1", "a", 10, 2)])
    assert [h.item_id for h in store.histories(["u1"])[0]] == ["c", "b", "a"]


def test_replayed_offsets_are_skipped_not_double_counted(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    first = [ev("u1", "a", 10, 0), ev("u2", "a", 11, 1), ev("u3", "b", 12, 2)]
    store.append(first)
    before = store.trending(5, now=12)
    # A consumer restart re-delivers offsets 1..2 together with the new offset 3.
    again = store.append([*first[1:], ev("u4", "a", 13, 3)])
    assert (again.applied, again.skipped) == (1, 2)
    assert store.offsets() == {("movielog", 0): 4}
    after = dict(store.trending(5, now=12))
    assert after["a"] == pytest.approx(dict(before)["a"] + 2 ** (1 / HOUR))
    assert after["b"] == pytest.approx(dict(before)["b"])
    # Offsets are per partition: offset 0 of another partition is new.
    assert store.append([ev("u5", "b", 14, 0, partition=1)]).applied == 1
    assert store.offsets()[("movielog", 1)] == 1


def test_trending_decays_with_the_half_life(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(trend_half_life_s=HOUR)
    # "old" had three users an hour ago; "new" has two users now.
    store.append([ev(f"u{i}", "old", 0.0, i) for i in range(3)])
    store.append([ev(f"v{i}", "new", HOUR, 3 + i) for i in range(2)])
    got = dict(store.trending(2, now=HOUR))
    assert got["old"] == pytest.approx(1.5)
    assert got["new"] == pytest.approx(2.0)
    assert [i for i, _ in store.trending(2, now=HOUR)] == ["new", "old"]
    assert dict(store.trending(2, now=2 * HOUR))["new"] == pytest.approx(1.0)
    # The same user watching the same item again is not a new viewer.
    store.append([ev("v0", "new", HOUR, 5)])
    assert dict(store.trending(2, now=HOUR))["new"] == pytest.approx(2.0)


def test_trending_survives_an_anchor_rebase(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(trend_half_life_s=1.0)
    store.append([ev("u1", "a", 0.0, 0), ev("u2", "a", 0.0, 1)])
    # 1000 half-lives later the forward scale would pass 2**512: the anchor moves.
    store.append([ev("u3", "b", 1000.0, 2)])
    got = dict(store.trending(2, now=1000.0))
    assert got["b"] == pytest.approx(1.0)
    assert got["a"] == pytest.approx(2.0 * 2.0**-1000, rel=1e-6, abs=0)


def test_matches_the_memory_reference_on_a_random_stream(make_store) -> None:  # type: ignore[no-untyped-def]
    import random

    rng = random.Random(7)
    events = [
        ev(
            f"u{rng.randrange(20)}",
            f"m{rng.randrange(30)}",
            1000.0 + i * 7.0,
            i,
            rating=float(rng.randrange(1, 6)) if rng.random() < 0.3 else None,
        )
        for i in range(600)
    ]
    store = make_store(max_history=8)
    ref = MemoryState(8, 3600.0)
    for start in range(0, len(events), 97):
        store.append(events[start : start + 97])
        ref.append(events[start : start + 97])
    users = [f"u{i}" for i in range(20)]
    assert store.histories(users) == ref.histories(users)
    assert store.size() == ref.size()
    want = ref.trending(10, now=6000.0)
    got = store.trending(10, now=6000.0)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [c for _, c in got] == pytest.approx([c for _, c in want])


def test_state_outlives_the_client_that_wrote_it(make_store) -> None:  # type: ignore[no-untyped-def]
    """A serving replica that restarts opens the store again and finds the history there."""
    store = make_store()
    store.append([ev("u1", "a", 10, 0)])
    again = open_store(store.config)
    assert [h.item_id for h in again.histories(["u1"])[0]] == ["a"]


def test_unreachable_redis_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        RedisStateStore(StateConfig(kind="redis", url="redis://127.0.0.1:1/0"))
