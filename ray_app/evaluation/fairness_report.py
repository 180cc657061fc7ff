"""The fairness report of a registered version: ``report.json`` and a self-contained
``report.html`` (inline SVG, no scripts, no external assets) from its manifest's ``fairness``
block (:mod:`ray_app.evaluation.fairness`)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from ray_app.errors import UserError
from ray_app.evaluation.fairness import BUCKETS
from ray_app.registry.store import Registry
from ray_app.report_files import write_json_and_html

_BLUE, _ORANGE, _GREY = "#4c78a8", "#f58518", "#bbbbbb"


def load_fairness_report(registry: Registry, model: str, version: str | None) -> dict[str, Any]:
    """The report of ``model``'s ``version`` (default: the newest), after verifying the
    version's signature; :class:`UserError` naming the fix when there is none to make."""
    versions = registry.versions(model)
    if not versions:
        have = ", ".join(registry.models()) or "none"
        raise UserError(
            f"registry {registry.uri} has no versions of model {model!r} (models: {have}); "
            "pass --model with one of them, or train it first"
        )
    version = version or versions[-1]
    if version not in versions:
        raise UserError(
            f"model {model!r} has no version {version!r}; its versions are "
            f"{', '.join(versions[-5:])} (newest last): pass --version with one of them"
        )
    manifest = registry.fetch(model, version).manifest
    block = manifest.get("fairness")
    if not block:
        raise UserError(
            f"{model} {version} has no fairness block (registered before fairness was measured, "
            "or with fairness.enabled false): train a new version with `ray-app train`"
        )
    return {
        "model": model,
        "version": version,
        "created_at": manifest.get("created_at"),
        "metrics": manifest.get("metrics", {}),
        "fairness": block,
        "shilling": manifest.get("shilling"),
    }


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else html.escape(str(x))


def svg_group_bars(groups: dict[str, dict[str, Any]], metric: str) -> str:
    """Horizontal bars of each group's mean ``metric`` with its interval as whiskers; groups
    too small for the parity figures are grey."""
    rows = [(g, f) for g, f in groups.items() if f.get(metric, {}).get("mean") is not None]
    if not rows:
        return "<p>no group has this metric</p>"
    row_h, left, width = 26, 130, 420
    top = max(max(f[metric]["ci"][1] or f[metric]["mean"], f[metric]["mean"]) for _, f in rows)
    scale = width / ((top or 1.0) * 1.1)
    h = row_h * len(rows) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{h}" '
        f'role="img" aria-label="{html.escape(metric)} by group">'
    ]
    for i, (g, f) in enumerate(rows):
        y = 6 + i * row_h
        mean = f[metric]["mean"]
        lo, hi = (c if c is not None else mean for c in f[metric]["ci"])
        colour = _GREY if f.get("small") else _BLUE
        x_lo, x_hi = left + lo * scale, left + hi * scale
        parts += [
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" font-size="12">'
            f"{html.escape(g)} ({f['users']})</text>",
            f'<rect x="{left}" y="{y + 3}" width="{mean * scale:.1f}" height="16" '
            f'fill="{colour}"/>',
            f'<line x1="{x_lo:.1f}" x2="{x_hi:.1f}" y1="{y + 11}" y2="{y + 11}" '
            'stroke="#222" stroke-width="2"/>',
            f'<line x1="{x_lo:.1f}" x2="{x_lo:.1f}" y1="{y + 5}" y2="{y + 17}" stroke="#222"/>',
            f'<line x1="{x_hi:.1f}" x2="{x_hi:.1f}" y1="{y + 5}" y2="{y + 17}" stroke="#222"/>',
            f'<text x="{x_hi + 6:.1f}" y="{y + 15}" font-size="11">{mean:.3f}</text>',
        ]
    parts.append(f'<line x1="{left}" x2="{left}" y1="2" y2="{h - 4}" stroke="#888"/></svg>')
    return "".join(parts)


def svg_exposure(buckets: dict[str, dict[str, Any]]) -> str:
    """Side-by-side bars per popularity bucket: share of interactions (orange) and share of
    recommendation slots (blue)."""
    bw, gap, h = 40, 50, 180
    w = len(BUCKETS) * (2 * bw + gap) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 46}" role="img" '
        'aria-label="exposure by popularity bucket">'
    ]
    for i, name in enumerate(BUCKETS):
        b = buckets.get(name, {})
        x = 20 + i * (2 * bw + gap)
        for j, (key, colour) in enumerate(
            (("interaction_share", _ORANGE), ("recommendation_share", _BLUE))
        ):
            share = float(b.get(key, 0.0))
            bh = share * h
            parts.append(
                f'<rect x="{x + j * bw}" y="{h - bh + 10:.1f}" width="{bw - 4}" '
                f'height="{bh:.1f}" fill="{colour}"><title>{key}: {share:.3f}</title></rect>'
                f'<text x="{x + j * bw + (bw - 4) / 2:.1f}" y="{h - bh + 6:.1f}" '
                f'text-anchor="middle" font-size="10">{share:.2f}</text>'
            )
        parts.append(
            f'<text x="{x + bw}" y="{h + 28}" text-anchor="middle" font-size="13">{name} '
            f"({b.get('items', 0)} items)</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page for ``report``."""
    e = html.escape
    f = report["fairness"]
    k = f["k"]
    accuracy = list(f.get("parity_gap", {}))
    parity_rows = "".join(
        f"<tr><td>{e(kind)}</td>"
        + "".join(
            f"<td>{_fmt(entry[m]['gap'])}</td><td>{_fmt(entry[m]['ratio'])}</td>"
            f"<td>{_fmt(entry[m]['best'])} / {_fmt(entry[m]['worst'])}</td>"
            for m in accuracy
        )
        + f"<td>{_fmt(entry.get('miss_rate_difference'))}</td></tr>"
        for kind, entry in f["parity"].items()
    )
    heads = "".join(f"<th>{e(m)} gap</th><th>ratio</th><th>best / worst</th>" for m in accuracy)
    plots = "".join(
        f"<h3>{e(kind)}: {e(m)} by group ({round(100 * f['confidence'])}% bootstrap interval)"
        f"</h3>{svg_group_bars(groups, m)}"
        for kind, groups in f["groups"].items()
        for m in accuracy
    )
    buckets = f["exposure"]["buckets"]
    bucket_rows = "".join(
        f"<tr><td>{name}</td><td>{buckets[name]['items']}</td>"
        f"<td>{_fmt(buckets[name]['interaction_share'])}</td>"
        f"<td>{_fmt(buckets[name]['recommendation_share'])}</td>"
        f"<td>{_fmt(buckets[name]['exposure_share'])}</td></tr>"
        for name in BUCKETS
        if name in buckets
    )
    shilling = report.get("shilling")
    shilling_html = (
        f"<h2>Shilling screen</h2><p>{shilling['flagged']} of {shilling['users']} users flagged "
        f"and left out of training ({shilling['interactions_removed']} interactions; threshold "
        f"{shilling['threshold']}, budget {shilling['flag_budget']}); scores in "
        f"<code>{e(shilling['list']['path'])}</code> (SHA-256 {e(shilling['list']['sha256'])}).</p>"
        if shilling
        else ""
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:64em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Fairness report: {e(report["model"])} {e(report["version"])}</title>
<style>{style}</style></head><body>
<h1>Fairness report: {e(report["model"])} {e(report["version"])}</h1>
<p>Holdout of {f["users"]} users, top {k}; groups with fewer than {f["min_group_users"]}
users (grey) are shown but left out of the gaps. Gap: largest minus smallest group mean;
ratio: smallest over largest.</p>
<h2>Parity</h2>
<table><tr><th>grouping</th>{heads}<th>miss-rate difference</th></tr>{parity_rows}</table>
{plots}
<h2>Exposure by item popularity</h2>
<p>Head items make up the first {f["exposure"]["head_share"]:.0%} of training interactions,
tail items the last {f["exposure"]["tail_share"]:.0%}. List Gini {_fmt(f["list_gini"])},
exposure Gini (rank-weighted) {_fmt(f["exposure_gini"])}, coverage {_fmt(f["coverage"])}.</p>
<table><tr><th>bucket</th><th>items</th><th>share of interactions</th>
<th>share of slots</th><th>share of rank-weighted exposure</th></tr>{bucket_rows}</table>
<h3>Share of interactions (orange) and of recommendation slots (blue)</h3>
{svg_exposure(buckets)}
{shilling_html}
</body></html>
"""


def write_fairness_report(report: dict[str, Any], out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` under ``out_dir``; returns both paths."""
    return write_json_and_html(report, render_html(report), out_dir)
