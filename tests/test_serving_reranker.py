"""The re-ranker's novelty (long-tail) term: how novelty is scored, how it moves items, and the
Serve deployment reading popularity from the registry when ``user_config`` switches it on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from helpers import interactions, serve_replica

from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry, write_item_metadata
from ray_app.serving.reranker import (
    GenreIndex,
    PopularityNovelty,
    ReRanker,
    ReRankerConfig,
    mmr,
    rerank,
)

# head is liked by 4 users, mid by 2, tail by 1: the same genre, so MMR alone cannot tell them.
PAIRS = [(u, "head") for u in "abcd"] + [(u, "mid") for u in "ab"] + [("a", "tail")]
GENRES = {"head": ["Drama"], "mid": ["Drama"], "tail": ["Drama"], "other": ["Comedy"]}


def test_novelty_is_zero_for_the_most_popular_item_and_one_without_a_count() -> None:
    nov = PopularityNovelty({"head": 4.0, "mid": 2.0, "tail": 1.0, "never": 0.0})
    got = nov.of(["head", "mid", "tail", "never", "unknown"])
    assert got[0] == 0.0 and got[3] == 1.0 and got[4] == 1.0
    assert got[1] == pytest.approx(1 - np.log(3) / np.log(5))
    assert got[0] < got[1] < got[2] < got[3], "less popular, more novel"


def test_novelty_from_a_popularity_model_follows_its_counts() -> None:
    nov = PopularityNovelty.from_model(Popularity().fit(interactions(PAIRS)))
    assert list(nov.of(["head", "mid", "tail"])) == pytest.approx(
        [0.0, 1 - np.log(3) / np.log(5), 1 - np.log(2) / np.log(5)]
    )


def test_a_strong_novelty_term_lifts_the_tail_over_the_head() -> None:
    index = GenreIndex(GENRES)
    items = ["head", "mid", "tail"]
    nov = PopularityNovelty({"head": 4.0, "mid": 2.0, "tail": 1.0})
    assert index.mmr(items, 3, 0.0) == items
    assert index.mmr(items, 3, 0.0, nov.of(items), 0.9) == ["tail", "mid", "head"]
    # A weak term only breaks near-ties: relevance steps are 1/3 here, novelty gaps smaller.
    assert index.mmr(items, 3, 0.0, nov.of(items), 0.1) == items


def test_without_novelty_the_index_is_still_plain_mmr() -> None:
    index = GenreIndex(GENRES)
    items = ["head", "mid", "other", "tail"]
    for d in (0.0, 0.3, 0.8):
        assert index.mmr(items, 3, d, np.ones(4), 0.0) == mmr(items, GENRES, 3, d)


def test_novelty_and_diversity_combine() -> None:
    index = GenreIndex(GENRES)
    items = ["head", "mid", "tail", "other"]
    nov = PopularityNovelty({"head": 4.0, "mid": 2.0, "tail": 1.0, "other": 4.0})
    # Diversity alone brings the other genre up to second place…
    assert index.mmr(items, 2, 0.6) == ["head", "other"]
    # …novelty then starts from the least popular drama instead of the head.
    assert index.mmr(items, 2, 0.6, nov.of(items), 0.7)[0] == "tail"


def test_rerank_uses_the_term_only_when_the_setting_is_on() -> None:
    index = GenreIndex(GENRES)
    nov = PopularityNovelty({"head": 4.0, "mid": 2.0, "tail": 1.0})
    lists = [["head", "mid", "tail"]]
    assert rerank(index, nov, ReRankerConfig(diversity=0.0), lists, [3]) == lists
    assert rerank(index, nov, ReRankerConfig(diversity=0.0, novelty=0.9), lists, [2]) == [
        ["tail", "mid"]
    ]
    assert rerank(index, None, ReRankerConfig(diversity=0.0, novelty=0.9), lists, [3]) == lists


def test_the_deployment_reads_popularity_from_the_registry_when_switched_on(
    tmp_path: Path,
) -> None:
    reg = Registry(tmp_path / "registry")
    write_item_metadata(reg, {k: list(v) for k, v in GENRES.items()})
    reg.register(Popularity().fit(interactions(PAIRS)))
    reranker = serve_replica(ReRanker, registry=str(reg.uri), signing=reg.signing)
    reranker.reconfigure({"diversity": 0.0})
    lists = [["head", "mid", "tail"]]
    assert asyncio.run(reranker.rerank_batch(lists, [3])) == lists
    assert reranker.novelty is None, "off by default: popularity is not even read"
    reranker.reconfigure({"diversity": 0.0, "novelty": 0.9})
    assert asyncio.run(reranker.rerank_batch(lists, [3])) == [["tail", "mid", "head"]]
    reranker.reconfigure({"diversity": 0.0, "novelty": 0.0})
    assert asyncio.run(reranker.rerank_batch(lists, [3])) == lists


def test_without_a_popularity_version_the_term_stays_off(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "registry")
    write_item_metadata(reg, {k: list(v) for k, v in GENRES.items()})
    reranker = serve_replica(ReRanker, registry=str(reg.uri), signing=reg.signing)
    reranker.reconfigure({"diversity": 0.0, "novelty": 0.9})
    lists = [["head", "mid", "tail"]]
    assert asyncio.run(reranker.rerank_batch(lists, [3])) == lists


def test_the_knob_is_validated() -> None:
    with pytest.raises(ValueError, match="novelty"):
        ReRankerConfig(novelty=1.5)
