"""Model staleness as a Prometheus gauge: seconds since the serving model was trained.

The retraining job (or anything that knows which versions serve) calls
:func:`staleness_registry` with each served model's ``created_at`` from its registry manifest;
``ModelStale`` in ``configs/prometheus/loop_rules.yml`` alerts on the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Gauge


def staleness_registry(
    created_at: Mapping[tuple[str, str], datetime], now: datetime | None = None
) -> CollectorRegistry:
    """``{(model, version): created_at}`` → gauges ``ray_app_model_age_seconds`` and
    ``ray_app_model_created_timestamp_seconds`` (own registry)."""
    now = now or datetime.now(UTC)
    reg = CollectorRegistry()
    age = Gauge(
        "ray_app_model_age_seconds",
        "Seconds since the serving model version was created.",
        ["model", "version"],
        registry=reg,
    )
    created = Gauge(
        "ray_app_model_created_timestamp_seconds",
        "Creation time of the serving model version (Unix seconds).",
        ["model", "version"],
        registry=reg,
    )
    for (model, version), ts in created_at.items():
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)  # manifests store UTC; naive means UTC by contract
        age.labels(model, version).set(max(0.0, (now - ts).total_seconds()))
        created.labels(model, version).set(ts.timestamp())
    return reg
