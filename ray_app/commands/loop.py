"""Closed-loop commands: ``simulate``, ``online-eval``, ``experiment report``,
``experiment feedback-loop``, ``drift``.

Each command imports its heavy dependencies when it runs so that ``ray-app --help`` stays fast.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ray_app.commands.common import (
    BootstrapOpt,
    SnapshotDirOpt,
    console,
    require_snapshot_dir,
    user_errors,
)
from ray_app.config import validate_config
from ray_app.errors import UserError


def _parse_weights(text: str) -> dict[str, float] | None:
    """``A=0.5,B=0.5`` → dict; empty → None (equal weights)."""
    if not text.strip():
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise typer.BadParameter(f"{part!r} is not NAME=WEIGHT; e.g. --weights A=0.5,B=0.5")
    return out


def simulate_cmd(
    endpoint: Annotated[str, typer.Option(help="Serving app base URL.")] = "http://127.0.0.1:8000",
    bootstrap_servers: BootstrapOpt = "",
    topic: Annotated[str, typer.Option(help="Line-dialect topic.")] = "movielog",
    to_file: Annotated[
        Path | None, typer.Option(help="Append event lines to this file instead of Kafka.")
    ] = None,
    dataset: Annotated[str, typer.Option(help="MovieLens variant.")] = "ml-100k",
    users: Annotated[int, typer.Option(help="Simulated users (0: all).")] = 200,
    steps: Annotated[int, typer.Option(help="Requests per user.")] = 3,
    max_requests: Annotated[int, typer.Option(help="Hard bound on requests.")] = 10_000,
    max_seconds: Annotated[float, typer.Option(help="Hard bound on run time.")] = 600.0,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    k: Annotated[int, typer.Option(help="Items per list.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Simulated MovieLens users request recommendations over HTTP and react to them."""
    from ray_app.data.movielens import load
    from ray_app.simulation.run import (
        EventSink,
        FileSink,
        KafkaSink,
        SimulationConfig,
        simulate_http,
    )
    from ray_app.simulation.users import build_population

    cfg = validate_config(
        SimulationConfig,
        {
            "endpoint": endpoint,
            "bootstrap_servers": bootstrap_servers,
            "topic": topic,
            "dataset": dataset,
            "n_users": users or None,  # 0: every user
            "steps_per_user": steps,
            "max_requests": max_requests,
            "max_seconds": max_seconds,
            "concurrency": concurrency,
            "k": k,
            "seed": seed,
        },
    )
    population = build_population(load(dataset).ratings, cfg.behaviour, cfg.n_users, seed)
    console.print(f"{len(population.users)} simulated users → {cfg.endpoint}")
    if to_file is not None:
        sink: EventSink = FileSink(str(to_file))
        stats = simulate_http(population, cfg, sink)
    else:
        from ray_app.broker.embedded import kafka_endpoint

        with kafka_endpoint(bootstrap_servers) as servers:
            stats = simulate_http(population, cfg, KafkaSink(servers, topic))
    console.print(stats.summary())
    if stats.requests == 0:
        raise UserError(
            f"no request to {cfg.endpoint} succeeded; start the serving app (ray-app serve) "
            "or point --endpoint at it"
        )


def online_eval_cmd(
    snapshot_dir: SnapshotDirOpt,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("online_eval"),
    window_minutes: Annotated[float, typer.Option(help="Attribution window.")] = 60.0,
    every: Annotated[float, typer.Option(help="Recompute every N seconds (0: once).")] = 0.0,
    port: Annotated[int, typer.Option(help="Serve gauges on this port with --every (0: no).")] = 0,
) -> None:
    """Join reco events to later watches; conversion per variant and model version."""
    from ray_app.evaluation.online import run_online_eval, run_online_eval_loop

    if window_minutes <= 0:
        raise UserError(f"--window-minutes must be positive, got {window_minutes}")
    window = timedelta(minutes=window_minutes)
    require_snapshot_dir(snapshot_dir)
    if every > 0:
        console.print(f"recomputing every {every:g}s; Ctrl-C stops")
        run_online_eval_loop(snapshot_dir, window, out, interval_s=every, port=port or None)
        return
    res = run_online_eval(snapshot_dir, window, out)
    table = Table("variant", "model", "version", "requests", "users", "conversions", "rate")
    for r in res.conversion.itertuples(index=False):
        table.add_row(
            str(r.variant),
            str(r.model),
            str(r.version),
            str(r.requests),
            str(r.users),
            str(r.conversions),
            f"{r.conversion_rate:.4f}",
        )
    console.print(table)
    console.print(f"wrote {res.conversion_path}, {res.attribution_path}, {res.metrics_path}")


def experiment_report_cmd(
    snapshot_dir: SnapshotDirOpt,
    out: Annotated[Path, typer.Option(help="Directory for report.json and report.html.")],
    control: Annotated[str, typer.Option(help="Control variant (default: first by name).")] = "",
    weights: Annotated[str, typer.Option(help="Configured weights, e.g. A=0.5,B=0.5.")] = "",
    planned: Annotated[int, typer.Option(help="Planned requests per variant (0: from --mde).")] = 0,
    mde: Annotated[float, typer.Option(help="Absolute lift to detect when --planned is 0.")] = 0.05,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    power: Annotated[float, typer.Option(help="Power for planning.")] = 0.8,
    window_minutes: Annotated[float, typer.Option(help="Attribution window.")] = 60.0,
) -> None:
    """Analyse an A/B experiment: rates with CIs, z-test, effect size, SRM, sample size."""
    from ray_app.experiments.report import ExperimentConfig, report_from_snapshots

    cfg = validate_config(
        ExperimentConfig,
        {
            "control": control or None,
            "weights": _parse_weights(weights),
            "planned_requests_per_variant": planned or None,
            "min_detectable_lift": mde,
            "alpha": alpha,
            "power": power,
            "window_s": window_minutes * 60,
        },
    )
    # The report explains data it cannot analyse (no reco events, one variant) as ValueError.
    with user_errors(ValueError):
        report = report_from_snapshots(require_snapshot_dir(snapshot_dir), out, cfg)
    table = Table("variant", "requests", "users", "conversions", "rate", "95% CI")
    for v in report["variants"]:
        table.add_row(
            str(v["variant"]),
            str(v["requests"]),
            str(v["users"]),
            str(v["conversions"]),
            f"{v['rate']:.4f}",
            f"[{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]",
        )
    console.print(table)
    for c in report["comparisons"]:
        console.print(
            f"{c['treatment']} vs {c['control']}: lift {c['absolute_lift']:+.4f}, "
            f"p = {c['p_value']:.3g}, Cohen's h = {c['cohens_h']:.3f}"
        )
    console.print(f"[bold]{report['decision']}[/bold]")
    console.print(f"wrote {out / 'report.json'} and {out / 'report.html'}")


def feedback_loop_cmd(
    out: Annotated[Path, typer.Option(help="Directory for report.json and report.md.")],
    cycles: Annotated[int, typer.Option(help="Retraining cycles per arm.")] = 5,
    mitigation: Annotated[
        str, typer.Option(help="Also run every arm with this mitigation: none or novelty.")
    ] = "none",
    choice: Annotated[
        list[str] | None,
        typer.Option(help="User-choice model: preference or popularity (repeat; default both)."),
    ] = None,
    dataset: Annotated[str, typer.Option(help="MovieLens variant.")] = "ml-100k",
    model: Annotated[str, typer.Option(help="Model retrained every cycle.")] = "itemknn",
    k: Annotated[int, typer.Option(help="Items served per list.")] = 10,
    hidden_share: Annotated[
        float, typer.Option(help="Share of each user's ratings hidden as their taste.")
    ] = 0.8,
    novelty_weight: Annotated[float, typer.Option(help="Re-ranker novelty under mitigation.")] = (
        0.3
    ),
    diversity: Annotated[float, typer.Option(help="Re-ranker MMR diversity in every arm.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Closed loops of simulated choice → snapshots → retrain → promote → serve; flags an echo
    chamber when the exposure Gini's slope interval lies above zero."""
    from ray_app.data.movielens import load
    from ray_app.experiments.feedback_loop import FeedbackLoopConfig
    from ray_app.experiments.feedback_loop_report import run_experiment
    from ray_app.simulation.choice import CHOICE_KINDS

    kinds = list(choice or CHOICE_KINDS)
    unknown = [c for c in kinds if c not in CHOICE_KINDS]
    if unknown:
        raise UserError(f"--choice {unknown[0]!r} is unknown; use one of {', '.join(CHOICE_KINDS)}")
    cfg = validate_config(
        FeedbackLoopConfig,
        {
            "cycles": cycles,
            "model": model,
            "k": k,
            "test_fraction": hidden_share,
            "novelty_weight": novelty_weight,
            "reranker": {"diversity": diversity},
            "seed": seed,
            "mitigation": mitigation,  # validated here, applied per arm
        },
    )
    ml = load(dataset)
    genres = dict(zip(ml.movies["item_id"].astype(str), ml.movies["genres"].map(list), strict=True))

    def progress(label: str, cycle: int, figures: dict[str, float]) -> None:
        console.print(
            f"{label} cycle {cycle}: gini {figures['gini']:.4f}, coverage "
            f"{figures['coverage']:.4f}, ndcg {figures['ndcg']:.4f}, conversion "
            f"{figures['conversion']:.4f}"
        )

    report = run_experiment(
        ml.ratings,
        genres,
        cfg.model_copy(update={"mitigation": "none"}),
        kinds,  # type: ignore[arg-type]  # checked against CHOICE_KINDS above
        cfg.mitigation,
        out,
        dataset=dataset,
        on_cycle=progress,
    )
    table = Table("choice", "mitigation", "echo chamber", "gini slope [95% CI]")
    for arm in report["arms"]:
        t = arm["trends"]["gini"]
        table.add_row(
            arm["choice"],
            arm["mitigation"],
            "[red]yes[/red]" if arm["echo_chamber"] else "no",
            f"{t['slope']:+.4f} [{t['low']:+.4f}, {t['high']:+.4f}]",
        )
    console.print(table)
    for c in report["comparisons"]:
        met = [name for name, ok in c["goals"].items() if ok]
        console.print(
            f"{c['choice']}: {c['mitigation']} meets {len(met)}/4 goals ({', '.join(met) or '-'})"
        )
    console.print(f"wrote {out / 'report.json'} and {out / 'report.md'}")


def drift_cmd(
    snapshot_dir: SnapshotDirOpt,
    recent_hours: Annotated[float, typer.Option(help="Length of the recent window.")] = 24.0,
    reference_end: Annotated[
        str, typer.Option(help="ISO time the training window ends (default: recent start).")
    ] = "",
    psi_threshold: Annotated[float, typer.Option(help="PSI alert threshold.")] = 0.2,
    ks_threshold: Annotated[float, typer.Option(help="KS statistic alert threshold.")] = 0.1,
    metrics_file: Annotated[
        Path | None, typer.Option(help="Write gauges in Prometheus textfile format here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """KS and PSI drift of ratings, user activity and item popularity (exit 1 on drift)."""
    from prometheus_client import write_to_textfile

    from ray_app.monitoring.drift import (
        DriftConfig,
        drift_from_snapshots,
        drift_registry,
        results_as_dicts,
    )

    cfg = validate_config(
        DriftConfig, {"psi_threshold": psi_threshold, "ks_threshold": ks_threshold}
    )
    try:
        end = datetime.fromisoformat(reference_end) if reference_end else None
    except ValueError as exc:
        raise UserError(
            f"--reference-end {reference_end!r} is not an ISO time; use e.g. 2026-01-01T00:00"
        ) from exc
    if end is not None and end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    require_snapshot_dir(snapshot_dir)
    results = drift_from_snapshots(snapshot_dir, timedelta(hours=recent_hours), end, cfg)
    if metrics_file is not None:
        write_to_textfile(str(metrics_file), drift_registry(results, cfg))
    if as_json:
        print(json.dumps(results_as_dicts(results), indent=2))
    else:
        table = Table("feature", "n ref", "n recent", "KS", "KS p", "PSI", "drift")
        for r in results:
            flag = "[red]yes[/red]" if r.drifted else ("no" if r.judged else "too few")
            table.add_row(
                r.feature,
                str(r.n_reference),
                str(r.n_current),
                f"{r.ks_statistic:.3f}",
                f"{r.ks_pvalue:.2g}",
                f"{r.psi:.3f}",
                flag,
            )
        console.print(table)
    if any(r.drifted for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the loop commands to the ``ray-app`` Typer app."""
    app.command("simulate")(simulate_cmd)
    app.command("online-eval")(online_eval_cmd)
    app.command("drift")(drift_cmd)
    experiment = typer.Typer(help="A/B experiment analysis.", no_args_is_help=True)
    experiment.command("report")(experiment_report_cmd)
    experiment.command("feedback-loop")(feedback_loop_cmd)
    app.add_typer(experiment, name="experiment")
