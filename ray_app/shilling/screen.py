"""The pre-training shilling screen: score the training users, leave the flagged ones out, keep
the list beside the registry and say so in the manifest and in a metric.

The score table (``user_id, score, flagged`` for every user) is written to
``<registry>/_shilling/<sha256>.parquet``: named by its own SHA-256, so it needs no version
name and is never overwritten. Every version trained on the screened data records that path
and hash in its signed manifest (the ``shilling`` entry), which makes the list as
tamper-evident as the model: :func:`read_screen_scores` checks the hash before returning it.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from ray_app.paths import resolve_location
from ray_app.registry.signing import SignatureError
from ray_app.registry.store import Registry
from ray_app.shilling.detector import SCORE_COLUMNS, ShillingConfig, score_users

SCREEN_DIR = "_shilling"
METHOD = "max robust z of popularity degree and RDMA"


@dataclass(frozen=True)
class Screen:
    """A screen's verdict on one training frame."""

    scores: pd.DataFrame
    """``user_id, score, flagged`` for every user of the frame."""
    config: ShillingConfig
    interactions_removed: int
    """Rows of the frame that belonged to flagged users."""

    @property
    def flagged(self) -> list[str]:
        """The flagged user ids, sorted."""
        return sorted(self.scores.loc[self.scores["flagged"], "user_id"].astype(str))

    def summary(self) -> dict[str, Any]:
        """Counts and settings (what the manifest and the metric report)."""
        return {
            "method": METHOD,
            "threshold": self.config.threshold,
            "flag_budget": self.config.flag_budget,
            "min_profile": self.config.min_profile,
            "users": len(self.scores),
            "users_scored": int(self.scores["score"].notna().sum()),
            "flagged": len(self.flagged),
            "interactions_removed": self.interactions_removed,
        }


def screen_frame(frame: pd.DataFrame, config: ShillingConfig) -> tuple[pd.DataFrame, Screen]:
    """Score the users of a training ``frame`` (``user_id, item_id, rating``); returns the frame
    without the flagged users' rows, and the screen."""
    scores = score_users(frame, config)
    bad = set(scores.loc[scores["flagged"], "user_id"].astype(str))
    drop = frame["user_id"].astype(str).isin(bad).to_numpy()
    kept = frame[~drop].reset_index(drop=True)
    return kept, Screen(scores, config, int(drop.sum()))


def store_screen(registry: Registry, screen: Screen) -> dict[str, Any]:
    """Write the score table under the registry root; returns the manifest's ``shilling``
    entry (the summary plus the table's path, relative to the root, and SHA-256)."""
    buf = io.BytesIO()
    screen.scores[SCORE_COLUMNS].to_parquet(buf, index=False)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    rel = f"{SCREEN_DIR}/{digest}.parquet"
    registry.fs.create_dir(registry.path(SCREEN_DIR), recursive=True)
    target = registry.path(rel)
    if registry.fs.get_file_info(target).type != pafs.FileType.File:
        tmp = registry.path(SCREEN_DIR, f".{digest}.tmp")
        with registry.fs.open_output_stream(tmp) as fh:
            fh.write(payload)
        registry.fs.move(tmp, target)
    return {**screen.summary(), "list": {"path": rel, "sha256": digest, "format": "parquet"}}


def read_screen_scores(registry: Registry, entry: dict[str, Any]) -> pd.DataFrame:
    """The score table a manifest's ``shilling`` entry points at, after checking its SHA-256
    (:class:`SignatureError` when it does not match)."""
    listed = entry["list"]
    path = registry.path(str(listed["path"]))
    with registry.fs.open_input_stream(path) as fh:
        payload = fh.read()
    if hashlib.sha256(payload).hexdigest() != listed["sha256"]:
        raise SignatureError(f"{path}: SHA-256 does not match the signed manifest (tampered)")
    return pd.read_parquet(io.BytesIO(payload))


def write_screen_metrics(summary: dict[str, Any], config: ShillingConfig) -> str | None:
    """Write the screen's gauges to ``config.metrics_file`` (if set); returns where."""
    if config.metrics_file is None:
        return None
    reg = CollectorRegistry()
    for name, help_text, key in (
        ("ray_app_shilling_flagged_users", "Users the last screen flagged.", "flagged"),
        ("ray_app_shilling_scored_users", "Users the last screen scored.", "users_scored"),
        (
            "ray_app_shilling_interactions_removed",
            "Training interactions of flagged users left out.",
            "interactions_removed",
        ),
        ("ray_app_shilling_flag_budget", "Largest share of users a screen may flag.", None),
    ):
        value = config.flag_budget if key is None else float(summary[key])
        Gauge(name, help_text, registry=reg).set(value)
    Gauge(
        "ray_app_shilling_last_screen_timestamp_seconds",
        "When the last screen ran.",
        registry=reg,
    ).set(time.time())
    path = resolve_location(config.metrics_file)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(path, reg)
    return path
