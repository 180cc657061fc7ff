"""A feedback-loop experiment: every choice model with and without the mitigation, the same
cycles side by side, written as ``report.json`` and ``report.md``.

The comparison of a mitigated arm with its unmitigated twin (same users, same choice model,
same seed) checks the goals: the exposure Gini slope at most half, mean catalogue coverage at
least 1.5 times, mean simulated conversion and mean NDCG down by at most 3%.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ray_app.experiments.feedback_loop import (
    ArmResult,
    FeedbackLoopConfig,
    Mitigation,
    run_arm,
)
from ray_app.experiments.feedback_loop_metrics import METRICS
from ray_app.registry.signing import SigningConfig
from ray_app.simulation.choice import ChoiceKind

GOALS = {
    "gini_slope_ratio_max": 0.5,
    "coverage_ratio_min": 1.5,
    "conversion_drop_max": 0.03,
    "ndcg_drop_max": 0.03,
}
ArmReport = Callable[[str, int, dict[str, float]], None]
"""``(arm label, cycle, figures)`` after each cycle."""


def _mean(arm: ArmResult, metric: str) -> float:
    values = np.array([c[metric] for c in arm.cycles], dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if b != 0 and math.isfinite(a) and math.isfinite(b) else float("nan")


def compare(base: ArmResult, mitigated: ArmResult) -> dict[str, Any]:
    """The mitigated arm against the unmitigated one, and which goals it meets."""
    base_slope = base.trends["gini"].slope
    slope_ratio = _ratio(mitigated.trends["gini"].slope, base_slope)
    coverage_ratio = _ratio(_mean(mitigated, "coverage"), _mean(base, "coverage"))
    conversion_change = _ratio(_mean(mitigated, "conversion"), _mean(base, "conversion")) - 1
    ndcg_change = _ratio(_mean(mitigated, "ndcg"), _mean(base, "ndcg")) - 1
    return {
        "gini_slope": [base_slope, mitigated.trends["gini"].slope],
        "gini_slope_ratio": slope_ratio,
        "coverage_ratio": coverage_ratio,
        "conversion_change": conversion_change,
        "ndcg_change": ndcg_change,
        "goals": {
            # A slope that does not rise without mitigation leaves nothing to halve.
            "gini_slope_halved": bool(
                base_slope > 0 and mitigated.trends["gini"].slope <= 0.5 * base_slope
            ),
            "coverage_1_5x": bool(coverage_ratio >= GOALS["coverage_ratio_min"]),
            "conversion_within_3pct": bool(conversion_change >= -GOALS["conversion_drop_max"]),
            "ndcg_within_3pct": bool(ndcg_change >= -GOALS["ndcg_drop_max"]),
        },
    }


def run_experiment(
    ratings: pd.DataFrame,
    genres: Mapping[str, Sequence[str]] | None,
    base: FeedbackLoopConfig,
    choices: Sequence[ChoiceKind],
    mitigation: Mitigation | None,
    out: Path,
    *,
    dataset: str = "",
    signing: SigningConfig | None = None,
    on_cycle: ArmReport | None = None,
) -> dict[str, Any]:
    """Run every arm (each choice model; without and, with ``mitigation``, with it) and write
    ``report.json`` and ``report.md`` under ``out``; returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    arms: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    for kind in choices:
        results: dict[str, ArmResult] = {}
        for mit in ("none", *([mitigation] if mitigation and mitigation != "none" else [])):
            label = f"{kind}/{mit}"
            config = base.model_copy(
                update={"choice": base.choice.model_copy(update={"kind": kind}), "mitigation": mit}
            )
            results[mit] = run_arm(
                ratings,
                genres,
                config,
                out / "work" / kind / mit,
                signing,
                _labelled(on_cycle, label),
            )
            arms.append(results[mit].as_dict())
        if mitigation and mitigation != "none":
            comparisons.append(
                {
                    "choice": kind,
                    "mitigation": mitigation,
                    **compare(results["none"], results[mitigation]),
                }
            )
    report = {
        "dataset": dataset,
        "cycles": base.cycles,
        "model": base.model,
        "k": base.k,
        "goals": GOALS,
        "arms": arms,
        "comparisons": comparisons,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    (out / "report.md").write_text(markdown(report))
    return report


def _labelled(
    on_cycle: ArmReport | None, label: str
) -> Callable[[int, dict[str, float]], None] | None:
    if on_cycle is None:
        return None
    report = on_cycle

    def each(cycle: int, figures: dict[str, float]) -> None:
        report(label, cycle, figures)

    return each


def _jsonable(x: Any) -> Any:
    return float(x) if isinstance(x, np.floating) else str(x)


def _f(x: float, fmt: str = ".4f") -> str:
    return format(x, fmt) if isinstance(x, float) and math.isfinite(x) else "n/a"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: per-arm slopes with intervals, per-cycle figures, comparisons."""
    lines = [
        f"# Feedback loops: {report['dataset'] or 'ratings'}, {report['model']}, "
        f"{report['cycles']} cycles, k={report['k']}",
        "",
        "## Trends (slope per cycle, 95% interval)",
        "",
        "| choice | mitigation | echo chamber | " + " | ".join(METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    for arm in report["arms"]:
        cells = [
            f"{_f(t['slope'], '+.4f')} [{_f(t['low'], '+.4f')}, {_f(t['high'], '+.4f')}]"
            for t in (arm["trends"][m] for m in METRICS)
        ]
        flag = "**yes**" if arm["echo_chamber"] else "no"
        lines.append(
            f"| {arm['choice']} | {arm['mitigation']} | {flag} | " + " | ".join(cells) + " |"
        )
    if report["comparisons"]:
        lines += [
            "",
            "## Mitigation against no mitigation (means over cycles)",
            "",
            "| choice | mitigation | Gini slope (none → mitigated) | slope ratio (≤0.5) | "
            "coverage ratio (≥1.5) | conversion change (≥-3%) | NDCG change (≥-3%) |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in report["comparisons"]:
            g = c["goals"]

            def mark(ok: bool) -> str:
                return "met" if ok else "not met"

            lines.append(
                f"| {c['choice']} | {c['mitigation']} | {_f(c['gini_slope'][0], '+.4f')} → "
                f"{_f(c['gini_slope'][1], '+.4f')} | {_f(c['gini_slope_ratio'], '.2f')} "
                f"({mark(g['gini_slope_halved'])}) | {_f(c['coverage_ratio'], '.2f')} "
                f"({mark(g['coverage_1_5x'])}) | {_f(c['conversion_change'], '+.1%')} "
                f"({mark(g['conversion_within_3pct'])}) | {_f(c['ndcg_change'], '+.1%')} "
                f"({mark(g['ndcg_within_3pct'])}) |"
            )
    lines += ["", "## Per cycle", ""]
    for arm in report["arms"]:
        lines += [
            f"### {arm['choice']} / {arm['mitigation']}",
            "",
            "| cycle | " + " | ".join(METRICS) + " | watches |",
            "|---|" + "---|" * (len(METRICS) + 1),
        ]
        for i, c in enumerate(arm["cycles"]):
            lines.append(
                f"| {i} | " + " | ".join(_f(c[m]) for m in METRICS) + f" | {int(c['watches'])} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"
