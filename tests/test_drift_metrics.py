"""Drift: injected shifts trip the thresholds, an unshifted sample does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from helpers import interactions
from prometheus_client import generate_latest

from ray_app.models.popularity import Popularity
from ray_app.monitoring.drift import (
    DriftConfig,
    compute_drift,
    drift_registry,
    psi,
    split_windows,
)
from ray_app.monitoring.staleness import StalenessGauge, serving_created_at
from ray_app.registry.store import Registry


def _events(n: int, seed: int, rating_shift: float = 0.0, hot_items: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 300, n).astype(str)
    items = (
        (rng.zipf(1.5, n) % 500).astype(str) if not hot_items else rng.integers(0, 5, n).astype(str)
    )
    rating = np.clip(np.round(rng.normal(3.6 - rating_shift, 1.0, n)), 1, 5)
    kind = np.where(rng.random(n) < 0.5, "rate", "watch")
    return pd.DataFrame(
        {
            "kind": kind,
            "user_id": users,
            "movie_id": items,
            "rating": np.where(kind == "rate", rating, np.nan),
        }
    )


def test_unshifted_sample_does_not_drift() -> None:
    results = compute_drift(_events(20_000, 0), _events(5_000, 1))
    assert not any(r.drifted for r in results), results


def test_shifted_ratings_trip_threshold() -> None:
    results = {r.feature: r for r in compute_drift(_events(20_000, 0), _events(5_000, 1, 1.0))}
    assert results["rating"].drifted and results["rating"].psi > 0.2
    assert not results["user_activity"].drifted


def test_popularity_shift_trips_threshold() -> None:
    results = {
        r.feature: r for r in compute_drift(_events(20_000, 0), _events(5_000, 1, hot_items=True))
    }
    assert results["item_popularity"].drifted


def test_small_windows_are_not_judged() -> None:
    results = compute_drift(_events(20_000, 0), _events(10, 1, 2.0), DriftConfig(min_samples=50))
    assert not any(r.drifted for r in results) and not any(r.judged for r in results)


def test_psi_known_answer() -> None:
    assert psi(np.array([50, 50]), np.array([50, 50])) == 0
    expected = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.2 - 0.5) * np.log(0.2 / 0.5)
    assert psi(np.array([1, 1]), np.array([4, 1])) == np.float64(expected)


def test_gauges_and_thresholds_exported() -> None:
    cfg = DriftConfig(psi_threshold=0.3)
    text = generate_latest(
        drift_registry(compute_drift(_events(2000, 0), _events(2000, 1, 1.0)), cfg)
    ).decode()
    assert 'ray_app_drift_psi{feature="rating"}' in text
    assert 'ray_app_drift_detected{feature="rating"} 1.0' in text
    assert "ray_app_drift_psi_threshold 0.3" in text


def test_split_windows() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ev = pd.DataFrame({"ts": [t0 + timedelta(hours=h) for h in range(10)], "x": range(10)})
    ref, cur = split_windows(ev, None, timedelta(hours=2))
    assert list(ref["x"]) == list(range(7)) and list(cur["x"]) == [7, 8, 9]


def test_staleness_gauge_follows_the_serving_versions() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    gauge = StalenessGauge()
    gauge.update({("itemknn", "3"): datetime(2026, 1, 1)}, now)
    text = generate_latest(gauge.registry).decode()
    assert 'ray_app_model_age_seconds{model="itemknn",version="3"} 86400.0' in text
    gauge.update({("itemknn", "4"): datetime(2026, 1, 1, 12, tzinfo=UTC)}, now)
    text = generate_latest(gauge.registry).decode()
    assert 'ray_app_model_age_seconds{model="itemknn",version="4"} 43200.0' in text
    assert 'version="3"' not in text, "a version that no longer serves is dropped"


def test_staleness_reads_creation_times_from_the_registry(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    model = Popularity().fit(interactions([("u", "a"), ("v", "b")]))
    mv = reg.register(model)
    variants: list[dict[str, Any]] = [
        {"name": "A", "model": "popularity", "version": mv.version},
        {"name": "canary", "model": "popularity", "version": mv.version},
        {"name": "B", "model": "popularity", "version": None},
        {"name": "C", "model": "popularity", "version": "v-missing"},
    ]
    created = serving_created_at(reg, variants)
    assert created == {
        ("popularity", mv.version): datetime.fromisoformat(mv.manifest["created_at"])
    }
