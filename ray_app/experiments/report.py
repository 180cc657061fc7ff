"""A/B experiment report from online-evaluation attribution: JSON + self-contained HTML.

The unit of analysis is a mature reco request (see :mod:`ray_app.evaluation.online`): a
request converts when its user watches one of its items within the attribution window.
Requests of one user are correlated, so assignment must be sticky per user (the A/B router's
is) and the report shows users next to requests; with many users per variant the z-test on
requests is the standard, slightly liberal, approximation.

Decision rule (fixed horizon, see :mod:`ray_app.experiments.stats`): a winner is declared only
when every compared variant has reached the planned sample size, the sample-ratio check
passes, and the two-sided p-value is below ``alpha``. Otherwise the report says why not.
"""

from __future__ import annotations

import html
import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ray_app.config import ConfigError
from ray_app.evaluation.online import attribute, load_attribution_events
from ray_app.experiments.stats import (
    cohens_h,
    required_sample_size,
    srm_test,
    two_proportion_ztest,
    wilson_interval,
)
from ray_app.report_files import write_json_and_html


class ExperimentConfig(BaseModel):
    """How an experiment is analysed."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    control: str | None = None
    """Variant every other is compared with; ``None`` takes the first variant by name."""
    weights: dict[str, float] | None = None
    """Configured traffic weights per variant for the sample-ratio check; ``None``: equal."""
    alpha: float = Field(default=0.05, gt=0, lt=1)
    """Two-sided significance level."""
    power: float = Field(default=0.8, gt=0, lt=1)
    """Power used for sample-size planning."""
    planned_requests_per_variant: int | None = Field(default=None, ge=1)
    """Fixed horizon; ``None`` plans for ``min_detectable_lift`` at the control's rate."""
    min_detectable_lift: float = Field(default=0.05, gt=0, lt=1)
    """Absolute lift the experiment must be able to detect when no horizon is given."""
    srm_alpha: float = Field(default=0.001, gt=0, lt=1)
    """SRM p-values below this flag broken assignment."""
    window_s: float = Field(default=3600.0, gt=0)
    """Attribution window in seconds (when the report starts from snapshots)."""

    @model_validator(mode="after")
    def _check_weights(self) -> ExperimentConfig:
        if self.weights is not None and any(w <= 0 for w in self.weights.values()):
            raise ValueError(f"weights must all be positive, got {self.weights}")
        return self


def _num(x: float) -> float | None:
    # JSON has no inf/nan; null says "not defined" explicitly.
    return None if x is None or not math.isfinite(x) else float(x)


def variant_summary(attributed: pd.DataFrame) -> pd.DataFrame:
    """Per variant: requests, users, conversions, rate, Wilson 95% CI (mature requests only)."""
    a = attributed[attributed["mature"].astype(bool)]
    g = a.groupby("variant", sort=True)
    out = pd.DataFrame(
        {
            "requests": g.size(),
            "users": g["user_id"].nunique(),
            "conversions": g["converted"].sum().astype(int),
            "models": g["model"].agg(lambda s: sorted(set(map(str, s)))),
            "versions": g["version"].agg(lambda s: sorted(set(map(str, s)))),
        }
    )
    out["rate"] = out["conversions"] / out["requests"]
    cis = [
        wilson_interval(int(c), int(n))
        for c, n in zip(out["conversions"], out["requests"], strict=True)
    ]
    out["ci_low"] = [c[0] for c in cis]
    out["ci_high"] = [c[1] for c in cis]
    return out


def build_report(
    attributed: pd.DataFrame, config: ExperimentConfig = ExperimentConfig()
) -> dict[str, Any]:
    """The report as a JSON-able dict (see ``report.json``)."""
    summary = variant_summary(attributed)
    variants = [str(v) for v in summary.index]
    # Plain dicts from here on: scalar access without pandas' Series-or-scalar typing.
    rows: dict[str, dict[Any, Any]] = {str(k): v for k, v in summary.to_dict("index").items()}
    report: dict[str, Any] = {
        "unit": "mature recommendation request",
        "test": "pooled two-proportion z-test, two-sided, fixed horizon",
        "alpha": config.alpha,
        "power": config.power,
        "variants": [],
        "comparisons": [],
        "winner": None,
        "decision": "",
    }
    if not variants:
        report["decision"] = "no mature reco events yet: nothing to compare"
        return report
    control = config.control if config.control is not None else variants[0]
    if control not in rows:
        raise ConfigError(
            f"control {control!r} has no mature reco events; set control to one of {variants}"
        )
    for v, row in rows.items():
        report["variants"].append(
            {
                "variant": v,
                "requests": int(row["requests"]),
                "users": int(row["users"]),
                "conversions": int(row["conversions"]),
                "rate": float(row["rate"]),
                "ci95": [float(row["ci_low"]), float(row["ci_high"])],
                "models": row["models"],
                "versions": row["versions"],
            }
        )
    weights = config.weights or {v: 1.0 for v in variants}
    missing = [v for v in variants if v not in weights]
    if missing:
        raise ConfigError(f"weights has no entry for variants {missing}; add them to weights")
    srm_ok = True
    if len(variants) >= 2:
        chi2, p_srm = srm_test(
            [int(rows[v]["requests"]) for v in variants], [weights[v] for v in variants]
        )
        srm_ok = p_srm >= config.srm_alpha
        report["srm"] = {
            "chi2": chi2,
            "p_value": p_srm,
            "weights": {v: weights[v] for v in variants},
            "ok": srm_ok,
        }
    c = rows[control]
    p_c = float(c["rate"])
    planned = config.planned_requests_per_variant
    if planned is None:
        target = min(1.0, p_c + config.min_detectable_lift)
        planned = math.ceil(required_sample_size(p_c, target, config.alpha, config.power))
    report["planned_requests_per_variant"] = planned
    report["control"] = control
    reasons: list[str] = []
    best: tuple[float, str] | None = None
    for v in variants:
        if v == control:
            continue
        t = rows[v]
        p_t = float(t["rate"])
        z, p = two_proportion_ztest(
            int(c["conversions"]), int(c["requests"]), int(t["conversions"]), int(t["requests"])
        )
        n_needed = required_sample_size(p_c, p_t, config.alpha, config.power)
        reached = min(int(c["requests"]), int(t["requests"])) >= planned
        significant = p < config.alpha
        report["comparisons"].append(
            {
                "control": control,
                "treatment": v,
                "absolute_lift": p_t - p_c,
                "relative_lift": _num((p_t - p_c) / p_c) if p_c > 0 else None,
                "cohens_h": cohens_h(p_c, p_t),
                "z": z,
                "p_value": p,
                "significant": significant,
                "required_requests_per_variant_for_observed_effect": _num(
                    math.ceil(n_needed) if math.isfinite(n_needed) else n_needed
                ),
                "planned_sample_reached": reached,
            }
        )
        if not reached:
            reasons.append(
                f"{v} vs {control}: planned sample of {planned} requests per variant not reached "
                f"({int(c['requests'])} and {int(t['requests'])}); no winner is declared before it"
            )
        elif not significant:
            reasons.append(
                f"{v} vs {control}: p = {p:.3g} ≥ alpha = {config.alpha}; no significant difference"
            )
        elif srm_ok:
            winner = v if p_t > p_c else control
            rate = max(p_t, p_c)
            if best is None or rate > best[0]:
                best = (rate, winner)
    if not srm_ok:
        reasons.insert(
            0, "sample-ratio mismatch: assignment is broken, results are not trustworthy"
        )
        best = None
    if best is not None:
        report["winner"] = best[1]
        report["decision"] = f"winner: {best[1]} (conversion {best[0]:.4f}, p < {config.alpha})"
    else:
        report["decision"] = "no winner: " + "; ".join(reasons or ["only one variant"])
    return report


# ---- HTML -------------------------------------------------------------------------------------


def _svg_rates(variants: list[dict[str, Any]]) -> str:
    """Horizontal bars of conversion rate with 95% CI whiskers, as inline SVG."""
    if not variants:
        return ""
    row_h, left, width = 34, 110, 460
    hi = max(v["ci95"][1] for v in variants) or 1.0
    scale = width / (hi * 1.1)
    h = row_h * len(variants) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{h}" role="img" aria-label="conversion rate by variant">'
    ]
    for i, v in enumerate(variants):
        y = 10 + i * row_h
        bar = v["rate"] * scale
        lo, up = left + v["ci95"][0] * scale, left + v["ci95"][1] * scale
        name = html.escape(str(v["variant"]))
        parts += [
            f'<text x="{left - 8}" y="{y + 17}" text-anchor="end" font-size="13">{name}</text>',
            f'<rect x="{left}" y="{y + 4}" width="{bar:.1f}" height="18" fill="#4c78a8"/>',
            f'<line x1="{lo:.1f}" x2="{up:.1f}" y1="{y + 13}" y2="{y + 13}" stroke="#222" stroke-width="2"/>',
            f'<line x1="{lo:.1f}" x2="{lo:.1f}" y1="{y + 7}" y2="{y + 19}" stroke="#222"/>',
            f'<line x1="{up:.1f}" x2="{up:.1f}" y1="{y + 7}" y2="{y + 19}" stroke="#222"/>',
            f'<text x="{up + 6:.1f}" y="{y + 17}" font-size="12">{v["rate"]:.3f}</text>',
        ]
    parts.append(f'<line x1="{left}" x2="{left}" y1="5" y2="{h - 20}" stroke="#888"/>')
    parts.append(f'<text x="{left}" y="{h - 5}" font-size="11">0</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_requests(variants: list[dict[str, Any]]) -> str:
    """Vertical bars of requests and users per variant, as inline SVG."""
    if not variants:
        return ""
    top = max(v["requests"] for v in variants) or 1
    bw, gap, h = 28, 30, 180
    w = len(variants) * (2 * bw + gap) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 40}" role="img" aria-label="requests and users by variant">'
    ]
    for i, v in enumerate(variants):
        x = 20 + i * (2 * bw + gap)
        for j, (key, colour) in enumerate((("requests", "#4c78a8"), ("users", "#f58518"))):
            bh = v[key] / top * h
            parts.append(
                f'<rect x="{x + j * bw}" y="{h - bh + 10:.1f}" width="{bw - 2}" height="{bh:.1f}" fill="{colour}"><title>{key}: {v[key]}</title></rect>'
            )
        parts.append(
            f'<text x="{x + bw}" y="{h + 28}" text-anchor="middle" font-size="13">{html.escape(str(v["variant"]))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (no scripts, no external assets) for ``report``."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(v['variant']))}</td><td>{v['requests']}</td><td>{v['users']}</td>"
        f"<td>{v['conversions']}</td><td>{v['rate']:.4f}</td>"
        f"<td>[{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]</td><td>{e(', '.join(v['models']))}</td>"
        f"<td>{e(', '.join(v['versions']))}</td></tr>"
        for v in report["variants"]
    )

    def fmt(x: Any) -> str:
        return "–" if x is None else (f"{x:.4g}" if isinstance(x, float) else e(str(x)))

    comps = "".join(
        "<tr>"
        + "".join(
            f"<td>{fmt(c[k])}</td>"
            for k in (
                "treatment",
                "control",
                "absolute_lift",
                "relative_lift",
                "cohens_h",
                "z",
                "p_value",
                "required_requests_per_variant_for_observed_effect",
                "planned_sample_reached",
            )
        )
        + "</tr>"
        for c in report["comparisons"]
    )
    srm = report.get("srm")
    srm_html = (
        f"<p>Sample-ratio check: χ² = {srm['chi2']:.3f}, p = {srm['p_value']:.3g} against weights "
        f"{e(json.dumps(srm['weights']))} — {'OK' if srm['ok'] else '<b>MISMATCH</b>'}</p>"
        if srm
        else ""
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        ".decision{font-size:1.2em;padding:.5em;background:#f3f3f3}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A/B experiment report</title>
<style>{style}</style></head><body>
<h1>A/B experiment report</h1>
<p class="decision">{e(report["decision"])}</p>
<p>Unit: {e(report["unit"])}. Test: {e(report["test"])}, alpha = {report["alpha"]},
power = {report["power"]}. Planned sample: {fmt(report.get("planned_requests_per_variant"))}
requests per variant; no winner is declared before every variant reaches it.</p>
<h2>Variants</h2>
<table><tr><th>variant</th><th>requests</th><th>users</th><th>conversions</th><th>rate</th>
<th>95% CI (Wilson)</th><th>models</th><th>versions</th></tr>{rows}</table>
<h3>Conversion rate with 95% CI</h3>{_svg_rates(report["variants"])}
<h3>Requests (blue) and users (orange)</h3>{_svg_requests(report["variants"])}
<h2>Comparisons</h2>
<table><tr><th>treatment</th><th>control</th><th>abs. lift</th><th>rel. lift</th><th>Cohen's h</th>
<th>z</th><th>p-value</th><th>n needed for observed effect</th><th>planned n reached</th></tr>{comps}</table>
{srm_html}
</body></html>
"""


def write_report(report: dict[str, Any], out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` under ``out_dir``; returns both paths."""
    return write_json_and_html(report, render_html(report), out_dir)


def report_from_snapshots(
    snapshot_dir: Path | str, out_dir: Path | str, config: ExperimentConfig = ExperimentConfig()
) -> dict[str, Any]:
    """Attribute the snapshots' reco events, analyse, write both files; returns the report."""
    events = load_attribution_events(snapshot_dir)
    attributed = attribute(events, timedelta(seconds=config.window_s))
    report = build_report(attributed, config)
    write_report(report, out_dir)
    return report
