"""Model staleness as Prometheus gauges: seconds since each serving model version was created.

``ray-app retrain --metrics-port`` updates a :class:`StalenessGauge` after every cycle with
the serving versions' ``created_at`` (from their registry manifests, see
:func:`serving_created_at`); ``ModelStale`` in ``configs/prometheus/loop_rules.yml`` alerts on
``ray_app_model_age_seconds``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from ray_app.registry.store import Registry

log = logging.getLogger(__name__)


class StalenessGauge:
    """``ray_app_model_age_seconds`` and ``ray_app_model_created_timestamp_seconds`` per
    ``(model, version)``, in a registry of their own (:attr:`registry`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._age = Gauge(
            "ray_app_model_age_seconds",
            "Seconds since the serving model version was created.",
            ["model", "version"],
            registry=self.registry,
        )
        self._created = Gauge(
            "ray_app_model_created_timestamp_seconds",
            "Creation time of the serving model version (Unix seconds).",
            ["model", "version"],
            registry=self.registry,
        )

    def update(
        self, created_at: Mapping[tuple[str, str], datetime], now: datetime | None = None
    ) -> None:
        """Replace the series with ``{(model, version): created_at}`` (versions that no longer
        serve disappear)."""
        now = now or datetime.now(UTC)
        self._age.clear()
        self._created.clear()
        for (model, version), ts in created_at.items():
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)  # manifests store UTC; naive means UTC by contract
            self._age.labels(model, version).set(max(0.0, (now - ts).total_seconds()))
            self._created.labels(model, version).set(ts.timestamp())


def serving_created_at(
    registry: Registry, variants: Iterable[Mapping[str, Any]]
) -> dict[tuple[str, str], datetime]:
    """``{(model, version): created_at}`` of the versions the service's slots serve, from
    their manifests; slots without a version, or whose manifest cannot be read, are left out
    (logged)."""
    out: dict[tuple[str, str], datetime] = {}
    for v in variants:
        model, version = v.get("model"), v.get("version")
        if not model or not version or (model, version) in out:
            continue
        try:
            created = registry.read_manifest(str(model), str(version))["created_at"]
            out[(str(model), str(version))] = datetime.fromisoformat(created)
        except (OSError, KeyError, ValueError) as exc:
            log.warning("no creation time for %s %s: %s", model, version, exc)
    return out
