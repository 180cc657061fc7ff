"""``ray-app fairness``: the fairness report of a registered version, and conversion by user
group from the stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ray_app.commands.common import (
    DEFAULT_REGISTRY,
    RegistryOpt,
    SnapshotDirOpt,
    console,
    require_snapshot_dir,
)
from ray_app.config import validate_config
from ray_app.errors import UserError


def report_cmd(
    model: Annotated[str, typer.Option(help="Model name, e.g. ease.")],
    out: Annotated[Path, typer.Option(help="Directory for report.json and report.html.")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
    version: Annotated[str | None, typer.Option(help="Registry version (default: newest).")] = None,
) -> None:
    """Per-group accuracy with intervals, parity gaps and exposure by popularity of a version."""
    from ray_app.evaluation.fairness_report import load_fairness_report, write_fairness_report
    from ray_app.registry.store import Registry

    report = load_fairness_report(Registry(registry), model, version)
    f = report["fairness"]
    metrics = list(f["parity_gap"])
    table = Table("grouping", *(f"{m} gap" for m in metrics), "miss-rate diff", "worst group")
    for kind, entry in f["parity"].items():
        first = entry[metrics[0]] if metrics else {}
        table.add_row(
            kind,
            *(_num(entry[m]["gap"]) for m in metrics),
            _num(entry.get("miss_rate_difference")),
            str(first.get("worst") or "–"),
        )
    console.print(f"{report['model']} {report['version']}: top {f['k']}, {f['users']} users")
    console.print(table)
    buckets = f["exposure"]["buckets"]
    console.print(
        "slots by popularity bucket: "
        + ", ".join(
            f"{name} {b['recommendation_share']:.3f} (interactions {b['interaction_share']:.3f})"
            for name, b in buckets.items()
        )
    )
    console.print(
        f"list Gini {f['list_gini']:.4f}, exposure Gini {f['exposure_gini']:.4f}, "
        f"coverage {f['coverage']:.4f}"
    )
    json_path, html_path = write_fairness_report(report, out)
    console.print(f"wrote {json_path} and {html_path}")


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def online_cmd(
    snapshot_dir: SnapshotDirOpt,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("online_fairness"),
    window_minutes: Annotated[float, typer.Option(help="Attribution window.")] = 60.0,
    dataset: Annotated[
        str, typer.Option(help="MovieLens dataset of the user profiles ('' for none).")
    ] = "ml-100k",
    min_requests: Annotated[int, typer.Option(help="Requests a group needs to be judged.")] = 100,
    parity_bound: Annotated[float, typer.Option(help="Largest acceptable parity gap.")] = 0.05,
    every: Annotated[float, typer.Option(help="Recompute every N seconds (0: once).")] = 0.0,
    port: Annotated[int, typer.Option(help="Serve gauges on this port with --every (0: no).")] = 0,
) -> None:
    """Conversion per user group and variant, and the parity gap between groups."""
    from ray_app.evaluation.online import serve_latest
    from ray_app.evaluation.online_fairness import (
        OnlineFairnessConfig,
        load_profiles,
        run_online_fairness,
    )

    if window_minutes <= 0:
        raise UserError(f"--window-minutes must be positive, got {window_minutes}")
    cfg = validate_config(
        OnlineFairnessConfig,
        {
            "window_s": window_minutes * 60,
            "dataset": dataset or None,
            "min_requests": min_requests,
            "parity_bound": parity_bound,
        },
    )
    require_snapshot_dir(snapshot_dir)
    profiles = load_profiles(cfg.dataset)
    if every > 0:
        console.print(f"recomputing every {every:g}s; Ctrl-C stops")
        serve_latest(
            lambda: run_online_fairness(snapshot_dir, out, cfg, profiles).registry,
            interval_s=every,
            port=port or None,
            what="conversion by group",
        )
        return
    res = run_online_fairness(snapshot_dir, out, cfg, profiles)
    table = Table("variant", "grouping", "groups", "gap", "ratio", "best", "worst")
    for r in res.parity.to_dict("records"):
        flag = " [red](over bound)[/red]" if float(r["gap"]) > cfg.parity_bound else ""
        table.add_row(
            str(r["variant"]),
            str(r["group_kind"]),
            str(r["groups"]),
            f"{float(r['gap']):.4f}{flag}",
            f"{float(r['ratio']):.4f}",
            str(r["best"]),
            str(r["worst"]),
        )
    console.print(table)
    if res.parity.empty:
        console.print(f"no grouping has two groups with {cfg.min_requests}+ mature requests yet")
    console.print("wrote " + ", ".join(map(str, res.files)))


def register(app: typer.Typer) -> None:
    """Add the ``fairness`` group (``report``, ``online``) to ``app``."""
    group = typer.Typer(help="Fairness by user group, offline and online.", no_args_is_help=True)
    group.command("report")(report_cmd)
    group.command("online")(online_cmd)
    app.add_typer(group, name="fairness")
