"""Shared contract tests that every recommender's test class subclasses (LensKit style).

A subclass sets :meth:`ModelContract.model_factory` and :attr:`ModelContract.expected_ndcg`;
pytest then runs every ``test_*`` below against that model. The class name does not start with
``Test`` so that pytest does not collect it on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pydantic
import pytest
import scipy.sparse as sp

from ray_app.evaluation.offline import evaluate
from ray_app.models.base import Interactions, Recommender
from ray_app.models.catalog import build_model, load_model


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

    expected_ndcg: ClassVar[float]
    """Lower bound for NDCG@10 on :func:`checkerboard` (set per model)."""
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
        assert model.is_fitted

    def test_checkerboard_ndcg(self) -> None:
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
        for loaded in (type(model).load(tmp_path / "m"), load_model(tmp_path / "m")):
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
