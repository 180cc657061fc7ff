"""The item-item models' :class:`~ray_app.models.base.HistoryScorer` capability (fresh history
folded in at request time): the contract mixin also runs in each model's contract class; here
for item-KNN's row pruning too."""

from __future__ import annotations

from typing import Any

import pytest
from model_contract import HistoryScorerContract

from ray_app.models.base import HistoryScorer, Recommender
from ray_app.models.catalog import MODELS, build_model
from ray_app.models.ease import EASE
from ray_app.models.itemknn import ItemKNN, ItemKNNConfig


class TestItemKNNRowPruningHistory(HistoryScorerContract):
    def model_factory(self) -> Recommender[Any]:
        return ItemKNN(ItemKNNConfig(k=20, pruning="row"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_history_scorer_runs_the_contract_here(name: str) -> None:
    covered = {EASE, ItemKNN}
    model = build_model(name)
    assert isinstance(model, HistoryScorer) == (type(model) in covered), name
