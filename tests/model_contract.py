"""Shared contract tests that every recommender's test class subclasses (LensKit style).

A subclass sets :meth:`ModelContract.model_factory` and :attr:`ModelContract.expected_ndcg`;
pytest then runs every ``test_*`` below against that model. A model that declares a capability
(:class:`~ray_app.models.base.ColdStart`, :class:`~ray_app.models.base.EpochTrainable`,
:class:`~ray_app.models.base.FallbackRanker`) also mixes in that capability's contract
(:class:`ColdStartContract`, :class:`EpochTrainableContract`, :class:`FallbackRankerContract`);
:meth:`ModelContract.test_capabilities_have_their_contracts` checks that it does. The class
names do not start with ``Test`` so that pytest does not collect them on their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pydantic
import pytest
import scipy.sparse as sp
from helpers import interactions

from ray_app.evaluation.offline import evaluate
from ray_app.models.base import (
    ColdStart,
    EpochTrainable,
    FallbackRanker,
    HistoryScorer,
    Interactions,
    Recommender,
)
from ray_app.models.catalog import build_model, model_class


def checkerboard(n: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``implicit``'s checkerboard: user ``u`` likes every item of its own parity except item
    ``u``, which is held out.

    The right answer is known: for user ``u`` the only unseen item that co-occurs with its
    history is item ``u``, so a collaborative model ranks it first (NDCG@10 = 1), while every
    item has the same popularity (n/2 - 1 users), so a popularity model cannot tell.
    """
    u, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    liked = ((u + i) % 2 == 0) & (u != i)
    train = pd.DataFrame(
        {"user_id": [f"u{x}" for x in u[liked]], "item_id": [f"i{x}" for x in i[liked]]}
    )
    test = pd.DataFrame(
        {"user_id": [f"u{x}" for x in range(n)], "item_id": [f"i{x}" for x in range(n)]}
    )
    return train, test


def checkerboard_interactions(n: int = 30) -> tuple[Interactions, pd.DataFrame]:
    train, test = checkerboard(n)
    return Interactions.from_frame(train, weight_col=None), test


class ModelContract:
    """The behaviour every :class:`Recommender` promises."""

    expected_ndcg: ClassVar[float | None]
    """Lower bound for NDCG@10 on :func:`checkerboard` (set per model); None for a model that
    cannot use co-occurrence (its test is skipped, with the reason)."""
    ml100k_ndcg: ClassVar[float | None] = None
    """Lower bound for NDCG@10 on MovieLens-100K (per-user 10 % holdout, seed 0, all ratings
    positive, full ranking, seen excluded) with :meth:`ml100k_factory`'s model; None skips."""
    scores_empty_history: ClassVar[bool] = False
    """Whether the model can score a known user with no interactions (popularity can)."""

    def model_factory(self) -> Recommender[Any]:
        """A fresh, unfitted model with test-sized settings."""
        raise NotImplementedError

    def ml100k_factory(self) -> Recommender[Any]:
        """The model as configured for the MovieLens-100K bound (default: its defaults)."""
        return build_model(self.model_factory().name)

    @pytest.mark.realdata
    def test_quality_bound_on_movielens_100k(self, ml100k: Any) -> None:
        if self.ml100k_ndcg is None:
            pytest.skip("this model declares no MovieLens-100K bound")
        from ray_app.evaluation.split import per_user_holdout

        train, test = per_user_holdout(ml100k.ratings, test_fraction=0.1, seed=0)
        inter = Interactions.from_frame(train, weight_col=None)
        model = self.ml100k_factory().fit(inter)
        ndcg = evaluate(model, inter, test, k=10)["ndcg@10"]
        assert ndcg >= self.ml100k_ndcg, (
            f"{model.name}: NDCG@10 {ndcg:.4f} < bound {self.ml100k_ndcg}"
        )

    # ---- helpers ------------------------------------------------------------------------
    def fitted(self) -> tuple[Recommender[Any], Interactions, pd.DataFrame]:
        inter, test = checkerboard_interactions()
        return self.model_factory().fit(inter), inter, test

    # ---- contract -----------------------------------------------------------------------
    def test_capabilities_have_their_contracts(self) -> None:
        model = self.model_factory()
        for capability, contract in CAPABILITY_CONTRACTS:
            assert isinstance(model, capability) == isinstance(self, contract), (
                f"{type(model).__name__} {'declares' if isinstance(model, capability) else 'lacks'}"
                f" {capability.__name__}, but its test class "
                f"{'lacks' if isinstance(model, capability) else 'mixes in'} {contract.__name__}"
            )

    def test_config_rejects_unknown_keys(self) -> None:
        cls = type(self.model_factory())
        with pytest.raises(pydantic.ValidationError, match="not_a_setting"):
            cls.config_class.model_validate({"not_a_setting": 1})

    def test_config_is_frozen(self) -> None:
        model = self.model_factory()
        field = next(iter(type(model.config).model_fields))
        with pytest.raises(pydantic.ValidationError):
            setattr(model.config, field, getattr(model.config, field))

    def test_build_by_name(self) -> None:
        model = self.model_factory()
        built = build_model(model.name, model.config.model_dump())
        assert type(built) is type(model)
        assert built.config == model.config

    def test_unfitted_recommend_raises(self) -> None:
        with pytest.raises(RuntimeError, match="not fitted"):
            self.model_factory().recommend(["u0"])

    def test_fit_returns_self(self) -> None:
        model = self.model_factory()
        inter, _ = checkerboard_interactions()
        assert model.fit(inter) is model
        assert model.interactions is inter

    def test_checkerboard_ndcg(self) -> None:
        if self.expected_ndcg is None:
            pytest.skip("every checkerboard item ties for this model: no right answer to find")
        model, inter, test = self.fitted()
        result = evaluate(model, inter, test, k=10)
        assert result["ndcg@10"] >= self.expected_ndcg
        assert result["known"] == 1.0

    def test_excludes_seen(self) -> None:
        model, inter, _ = self.fitted()
        recs = model.recommend(list(inter.user_ids), k=inter.n_items)
        for uid, items in zip(recs.user_ids, recs.items, strict=True):
            row = inter.matrix[inter.user_ids.get_loc(uid)]
            seen = set(inter.item_ids[row.indices])
            assert not seen & set(items)
            assert len(items) == len(set(items))

    def test_scores_are_sorted(self) -> None:
        model, inter, _ = self.fitted()
        recs = model.recommend(list(inter.user_ids), k=5)
        for scores in recs.scores:
            assert scores == sorted(scores, reverse=True)

    def test_k_is_validated(self) -> None:
        model, _, _ = self.fitted()
        with pytest.raises(ValueError, match="k must be a positive integer"):
            model.recommend(["u0"], k=0)

    def test_k_larger_than_catalogue(self) -> None:
        model, inter, _ = self.fitted()
        recs = model.recommend(["u0"], k=10 * inter.n_items)
        n_seen = inter.matrix[inter.user_ids.get_loc("u0")].nnz
        assert len(recs.items[0]) <= inter.n_items - n_seen

    def test_unknown_users_are_marked(self) -> None:
        model, _, _ = self.fitted()
        recs = model.recommend(["nobody", "u1", "also-nobody"], k=3)
        assert recs.known == [False, True, False]
        assert recs.items[0] == [] and recs.items[2] == []
        assert len(recs.items[1]) == 3

    def test_empty_history(self) -> None:
        inter, _ = checkerboard_interactions()
        # One extra known user with no interactions at all.
        extra = pd.Index([*inter.user_ids, "ghost"], name="user_id")
        matrix = sp.vstack([inter.matrix, sp.csr_matrix((1, inter.n_items), dtype=np.float32)])
        model = self.model_factory().fit(Interactions(extra, inter.item_ids, matrix.tocsr()))
        recs = model.recommend(["ghost", "u0"], k=3)
        assert recs.known == [self.scores_empty_history, True]

    def test_batches_agree(self) -> None:
        model, inter, _ = self.fitted()
        users = list(inter.user_ids)
        assert model.recommend(users, k=5, batch_size=7).items == model.recommend(users, k=5).items

    def test_deterministic(self) -> None:
        first, inter, _ = self.fitted()
        second = self.model_factory().fit(inter)
        users = list(inter.user_ids)
        a, b = first.recommend(users, k=10), second.recommend(users, k=10)
        assert a.items == b.items
        np.testing.assert_array_equal(np.array(a.scores), np.array(b.scores))

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        model, inter, _ = self.fitted()
        files = model.save(tmp_path / "m")
        assert all((tmp_path / "m" / f).is_file() for f in files)
        users = [*inter.user_ids, "nobody"]
        before = model.recommend(users, k=10)
        # As the registry loads: the class comes from the name that model.json records.
        for loaded in (
            type(model).load(tmp_path / "m"),
            model_class(model.name).load(tmp_path / "m"),
        ):
            assert type(loaded) is type(model)
            assert loaded.config == model.config
            after = loaded.recommend(users, k=10)
            assert after.items == before.items
            assert after.known == before.known
            for s1, s2 in zip(before.scores, after.scores, strict=True):
                np.testing.assert_allclose(s1, s2, rtol=1e-6)

    def test_artifacts_load_without_pickle(self, tmp_path: Path) -> None:
        model, _, _ = self.fitted()
        model.save(tmp_path)
        for f in tmp_path.glob("*.npz"):
            with np.load(f, allow_pickle=False) as z:
                for key in z.files:
                    assert z[key].dtype != object


# ---- capability contracts -------------------------------------------------------------------
class ColdStartContract:
    """What :class:`~ray_app.models.base.ColdStart` promises: users the model never saw, scored
    from their features alone."""

    def cold_start_model(self) -> Recommender[Any]:
        """A model fitted on interactions with user features that carry the signal, so that
        different features must lead to different lists."""
        raise NotImplementedError

    def cold_users(self) -> pd.DataFrame:
        """Two users unknown to :meth:`cold_start_model`, with different features."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def cold_model(self) -> Recommender[Any]:
        return self.cold_start_model()

    def test_cold_users_get_k_valid_items(self, cold_model: Recommender[Any]) -> None:
        assert isinstance(cold_model, ColdStart)
        users = self.cold_users()
        assert not set(users["user_id"].astype(str)) & set(cold_model.interactions.user_ids)
        recs = cold_model.recommend_cold(users, k=5)
        assert recs.user_ids == users["user_id"].astype(str).tolist()
        assert recs.known == [True] * len(users)
        catalogue = set(cold_model.interactions.item_ids)
        for items, scores in zip(recs.items, recs.scores, strict=True):
            assert len(items) == 5 and len(set(items)) == 5
            assert set(items) <= catalogue
            assert scores == sorted(scores, reverse=True)

    def test_different_features_give_different_lists(self, cold_model: Recommender[Any]) -> None:
        assert isinstance(cold_model, ColdStart)
        recs = cold_model.recommend_cold(self.cold_users(), k=5)
        assert recs.items[0] != recs.items[1]

    def test_known_user_ids_keep_their_seen_items_excluded(
        self, cold_model: Recommender[Any]
    ) -> None:
        assert isinstance(cold_model, ColdStart)
        inter = cold_model.interactions
        user = str(inter.user_ids[0])
        seen = set(inter.item_ids[inter.matrix[0].indices])
        frame = self.cold_users().head(1).assign(user_id=user)
        got = cold_model.recommend_cold(frame, k=inter.n_items).items[0]
        assert seen and not seen & set(got)
        assert len(got) == inter.n_items - len(seen)
        with_seen = cold_model.recommend_cold(frame, k=inter.n_items, exclude_seen=False)
        assert seen <= set(with_seen.items[0])

    def test_cold_k_is_validated(self, cold_model: Recommender[Any]) -> None:
        assert isinstance(cold_model, ColdStart)
        with pytest.raises(ValueError, match="k must be a positive integer"):
            cold_model.recommend_cold(self.cold_users(), k=0)

    def test_cold_lists_survive_save_load(
        self, cold_model: Recommender[Any], tmp_path: Path
    ) -> None:
        assert isinstance(cold_model, ColdStart)
        cold_model.save(tmp_path)
        loaded = type(cold_model).load(tmp_path)
        assert isinstance(loaded, ColdStart)
        a = cold_model.recommend_cold(self.cold_users(), k=5)
        b = loaded.recommend_cold(self.cold_users(), k=5)
        assert a.items == b.items
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


class EpochTrainableContract:
    """What :class:`~ray_app.models.base.EpochTrainable` promises: ``on_epoch`` once per epoch,
    in order, with a model that already recommends at that epoch's weights."""

    expected_epochs: ClassVar[int]
    """Epochs that :meth:`ModelContract.model_factory`'s model trains for."""

    def model_factory(self) -> Recommender[Any]:
        raise NotImplementedError

    def test_on_epoch_runs_once_per_epoch_with_a_usable_model(self) -> None:
        inter, _ = checkerboard_interactions(12)
        users = list(inter.user_ids)
        model = self.model_factory()
        assert isinstance(model, EpochTrainable)
        calls: list[tuple[int, dict[str, float], np.ndarray]] = []

        def on_epoch(epoch: int, metrics: dict[str, float], m: Any) -> None:
            recs = m.recommend(users, k=3)
            assert recs.known == [True] * len(users)
            for uid, items in zip(users, recs.items, strict=True):
                seen = set(inter.item_ids[inter.matrix[inter.user_ids.get_loc(uid)].indices])
                assert len(items) == 3 and not seen & set(items)
            calls.append((epoch, metrics, m.score_users(np.arange(len(users))).copy()))

        assert model.fit_with_epochs(inter, on_epoch) is model
        assert [c[0] for c in calls] == list(range(1, self.expected_epochs + 1))
        assert all(np.isfinite(c[1]["loss"]) for c in calls)
        # Each call saw that epoch's weights: the first differ from the last, which are final.
        assert not np.allclose(calls[0][2], calls[-1][2])
        np.testing.assert_array_equal(calls[-1][2], model.score_users(np.arange(len(users))))

    def test_on_epoch_does_not_change_what_is_learnt(self) -> None:
        inter, _ = checkerboard_interactions(12)
        users = list(inter.user_ids)
        plain = self.model_factory().fit(inter).recommend(users, k=5)
        model = self.model_factory()
        assert isinstance(model, EpochTrainable)
        hooked = model.fit_with_epochs(inter, lambda *_: None).recommend(users, k=5)
        assert hooked.items == plain.items
        np.testing.assert_array_equal(np.array(hooked.scores), np.array(plain.scores))


def staircase(n: int = 6) -> Interactions:
    """User ``u{m}`` has every item ``i{j}`` with ``j >= m``, so item ``i{j}`` has ``j + 1``
    users: the best-first order of any popularity-like ranking is ``i{n-1}, ..., i0``."""
    return interactions((f"u{m}", f"i{j}") for m in range(n) for j in range(m, n))


class FallbackRankerContract:
    """What :class:`~ray_app.models.base.FallbackRanker` promises: one best-first ranking that
    answers for any user, honouring ``exclude``."""

    def model_factory(self) -> Recommender[Any]:
        raise NotImplementedError

    def fallback(self) -> Any:
        model = self.model_factory().fit(staircase())
        assert isinstance(model, FallbackRanker)
        return model

    def test_top_items_best_first(self) -> None:
        model = self.fallback()
        assert model.top_items(3) == ["i5", "i4", "i3"]
        assert model.top_items(100) == ["i5", "i4", "i3", "i2", "i1", "i0"]

    def test_top_items_honour_exclude(self) -> None:
        model = self.fallback()
        assert model.top_items(3, exclude={"i5", "i3", "not-an-item"}) == ["i4", "i2", "i1"]
        assert model.top_items(2, exclude=["i4"]) == ["i5", "i3"]
        assert model.top_items(3, exclude=frozenset(f"i{j}" for j in range(6))) == []

    def test_top_items_answer_users_the_model_never_saw(self) -> None:
        model = self.fallback()
        assert model.recommend(["stranger"], k=2).known == [False]
        assert model.top_items(2) == ["i5", "i4"]

    def test_top_items_validate_k(self) -> None:
        with pytest.raises(ValueError, match="k must be a positive integer"):
            self.fallback().top_items(0)

    def test_top_items_survive_save_load(self, tmp_path: Path) -> None:
        model = self.fallback()
        model.save(tmp_path)
        loaded = type(model).load(tmp_path)
        assert isinstance(loaded, FallbackRanker)
        assert loaded.top_items(4, exclude={"i4"}) == ["i5", "i3", "i2", "i1"]


class HistoryScorerContract:
    """What :class:`~ray_app.models.base.HistoryScorer` promises: a history given at request time
    is folded in exactly (the answer equals a trained user's with that history), its items and
    ``exclude``'s never come back, and an unknown user with history gets a personal list."""

    def model_factory(self) -> Recommender[Any]:
        raise NotImplementedError

    def history_model(self) -> Any:
        inter, _ = checkerboard_interactions()
        model = self.model_factory().fit(inter)
        assert isinstance(model, HistoryScorer)
        return model

    def test_a_new_user_with_a_trained_users_history_gets_that_users_list(self) -> None:
        model = self.history_model()
        inter = model.interactions
        for u in ("u3", "u8"):
            row = inter.matrix[inter.user_ids.get_loc(u)]
            history = inter.item_ids[row.indices].tolist()
            # The whole ranking: a cut at k may split tied scores differently per path.
            n = inter.n_items
            want = model.recommend([u], k=n)
            got = model.recommend_from_history(["never-seen"], [history], k=n)
            assert got.known == [True]
            assert got.items == want.items
            assert got.scores[0] == pytest.approx(want.scores[0], rel=1e-5)

    def test_an_empty_fresh_history_is_the_trained_answer(self) -> None:
        model = self.history_model()
        n = model.interactions.n_items
        want = model.recommend(["u1", "u2"], k=n)
        got = model.recommend_from_history(["u1", "u2"], [[], []], k=n)
        assert got.items == want.items and got.known == [True, True]

    def test_fresh_items_and_exclude_never_come_back(self) -> None:
        model = self.history_model()
        before = model.recommend(["u4"], k=3).items[0]
        assert before[0] == "i4"  # the checkerboard's held-out item
        got = model.recommend_from_history(["u4"], [[before[0]]], k=10, exclude=[{before[1]}])
        assert before[0] not in got.items[0] and before[1] not in got.items[0]
        assert len(got.items[0]) == 10

    def test_fresh_history_moves_the_ranking_towards_it(self) -> None:
        """Odd items co-occur with odd items only: an even user who just watched two odd items
        now gets odd items among their top answers."""
        model = self.history_model()
        got = model.recommend_from_history(["u0"], [["i1", "i3"]], k=5).items[0]
        assert any(int(i[1:]) % 2 == 1 for i in got)
        assert {"i1", "i3"}.isdisjoint(got)

    def test_unknown_items_are_ignored_and_no_known_item_is_unknown(self) -> None:
        model = self.history_model()
        got = model.recommend_from_history(
            ["new-a", "new-b", "new-c"], [["not-an-item", "i2"], ["not-an-item"], []], k=3
        )
        assert got.known == [True, False, False]
        assert got.items[1:] == [[], []]
        assert "i2" not in got.items[0] and len(got.items[0]) == 3

    def test_history_k_is_validated(self) -> None:
        with pytest.raises(ValueError, match="k must be a positive integer"):
            self.history_model().recommend_from_history(["u1"], [["i1"]], k=0)


CAPABILITY_CONTRACTS: tuple[tuple[type, type], ...] = (
    (ColdStart, ColdStartContract),
    (EpochTrainable, EpochTrainableContract),
    (FallbackRanker, FallbackRankerContract),
    (HistoryScorer, HistoryScorerContract),
)
"""Each capability and the contract mixin that every model declaring it must mix in."""
