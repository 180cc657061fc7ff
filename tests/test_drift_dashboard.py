"""The Grafana dashboard parses and only queries metrics the code or the rules define."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "configs" / "grafana" / "ray_app_loop.json"
_METRIC = re.compile(r"\bray_app[a-zA-Z0-9_:]*")
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def _known_metrics() -> set[str]:
    names: set[str] = set()
    for py in (ROOT / "ray_app").rglob("*.py"):
        # Metric names appear as string literals in Counter/Gauge/Histogram definitions.
        names |= set(re.findall(r"[\"'](ray_app_[a-z0-9_]+)[\"']", py.read_text()))
    for rules in (ROOT / "configs" / "prometheus").glob("*rules*.yml"):
        names |= set(re.findall(r"record:\s*(\S+)", rules.read_text()))
    return names


def _exprs(panels: list[dict]) -> list[tuple[str, str]]:
    out = []
    for p in panels:
        out += [(p["title"], t["expr"]) for t in p.get("targets", [])]
        out += _exprs(p.get("panels", []))
    return out


def test_dashboard_is_valid_json_with_unique_panel_ids() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] and dash["title"]
    assert all("gridPos" in p for p in dash["panels"])


def test_every_expr_references_a_defined_metric() -> None:
    known = _known_metrics()
    exprs = _exprs(json.loads(DASHBOARD.read_text())["panels"])
    assert len(exprs) >= 10
    for title, expr in exprs:
        used = _METRIC.findall(expr)
        assert used, f"panel {title!r} queries no ray_app metric: {expr}"
        for name in used:
            base = name
            for suffix in _SUFFIXES:
                base = base.removesuffix(suffix)
            assert name in known or base in known, f"panel {title!r}: {name} is not defined"


def test_dashboard_covers_the_loop() -> None:
    text = DASHBOARD.read_text()
    for metric in (
        "ray_app_ingest_records_total",
        "ray_app_ingest_consumer_lag",
        "ray_app_ingest_dead_letters_total",
        "ray_app:serving_latency_ms:p99_5m",
        "ray_app:serving_fallbacks:rate5m",
        "ray_app_online_conversion_rate",
        "ray_app_drift_psi",
        "ray_app_model_age_seconds",
    ):
        assert metric in text, metric
