"""The retraining policy (``configs/retrain.yaml``) and the ``--every`` schedule syntax."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from ray_app.config import ConfigError
from ray_app.evaluation.fairness import FairnessConfig
from ray_app.paths import Location
from ray_app.registry.signing import SigningConfig
from ray_app.shilling.detector import ShillingConfig
from ray_app.training.interactions import FeedbackConfig
from ray_app.training.job import ModelSpec


class RetrainConfig(BaseModel):
    """The retraining policy."""

    model_config = ConfigDict(extra="forbid")

    snapshot_dir: Location = "data/snapshots"
    """Snapshot location written by ingest (a path, or a URI such as ``s3://bucket/snapshots``)."""
    registry: str = "data/registry"
    """Registry root (local path or pyarrow filesystem URI)."""
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="ease"))
    """The model to retrain: the one the control slot serves (the gate compares the two)."""
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    """How watches and ratings become interaction weights."""
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    """Per-user holdout fraction for the offline metrics."""
    k: int = Field(default=10, ge=1)
    """Cut-off of the offline metrics."""
    seed: int = 42
    """Seed of the holdout split."""
    catalog_dataset: str | None = "ml-100k"
    """MovieLens dataset whose movies and user profiles are the item and user features (as in
    the train job); None trains without features."""
    gate_metric: str = "ndcg@10"
    """Offline metric the candidate must not lose on."""
    gate_tolerance: float = Field(default=0.01, ge=0)
    """Absolute slack: pass if candidate ≥ serving − tolerance."""
    parity_gap_tolerance: float | None = Field(default=0.05, ge=0)
    """Refuse a candidate whose parity gap of ``gate_metric`` over a grouping in
    ``parity_groups`` exceeds the serving version's by more than this (None: no check)."""
    parity_groups: list[str] = Field(default_factory=lambda: ["gender", "age_band"])
    """User groupings the parity check compares (of gender, age_band, occupation, activity).
    Not activity by default: its bands are cut from each version's own training data, so two
    versions' bands hold different users and their gaps are not like for like."""
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    """The fairness block of the candidate (as in the train job)."""
    shilling: ShillingConfig = Field(default_factory=ShillingConfig)
    """The shilling screen run on the snapshot data before training (as in the train job)."""
    require_new_data: bool = True
    """Skip the cycle when the serving version already saw every committed batch."""
    control_variant: str = "A"
    """Slot that serves the model being retrained; promotion switches it."""
    canary_variant: str = "canary"
    """Slot the candidate is tried in first."""
    canary_weight: float = Field(default=0.1, gt=0, lt=1)
    """Traffic share of the canary slot while it is judged."""
    canary_min_requests: int = Field(default=100, ge=1)
    """Canary answers needed to judge it; fewer by ``canary_max_wait_s`` rolls back."""
    canary_max_wait_s: float = Field(default=900.0, gt=0)
    """Longest wait for ``canary_min_requests``."""
    canary_poll_s: float = Field(default=2.0, gt=0)
    """Seconds between reads of the slots' counters while waiting."""
    max_fallback_rate_increase: float = Field(default=0.05, ge=0, le=1)
    """Roll back if the canary's fallback rate exceeds the control's by more than this."""
    signing: SigningConfig = Field(default_factory=SigningConfig)
    """How registered versions are signed."""


def parse_every(text: str) -> float:
    """``90s``, ``15m``, ``3h``, ``1d`` → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m:
        raise ConfigError(f"--every {text!r}: use a number with s, m, h or d, e.g. 3h")
    return float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
