"""``ray-app retrain``: one cycle, or ``--every 3h`` forever, with a staleness gauge."""

from __future__ import annotations

import datetime as dt
import re
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console()


def retrain_cmd(
    config: Annotated[Path | None, typer.Option(help="YAML RetrainConfig.")] = None,
    serve_url: Annotated[
        str, typer.Option(help="Serving app base URL (admin API).")
    ] = "http://127.0.0.1:8000",
    admin_token: Annotated[
        str | None,
        typer.Option(envvar="RAY_APP_ADMIN_TOKEN", help="Admin bearer token.", show_default=False),
    ] = None,
    every: Annotated[
        str | None, typer.Option(help="Repeat, e.g. 30m, 3h, 1d (default: one cycle).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve ray_app_model_age_seconds here.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster (default: local).")
    ] = None,
) -> None:
    """New snapshots → train → offline gate → register → canary → promote or roll back."""
    from ray_app.config import ConfigError, load_config
    from ray_app.retraining.control import HttpServiceControl
    from ray_app.retraining.cycle import (
        CycleResult,
        RetrainConfig,
        parse_every,
        run_cycle,
        run_schedule,
    )
    from ray_app.runtime import init_ray

    try:
        cfg = load_config(RetrainConfig, config)
        every_s = parse_every(every) if every else None
        control = HttpServiceControl(serve_url, admin_token)
    except (ConfigError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    init_ray(ray_address)
    gauge = _staleness_server(metrics_port) if metrics_port else None

    def report(result: CycleResult) -> None:
        console.print(
            f"[bold]{result.outcome}[/bold] {result.model} {result.version or ''}: {result.reason}"
        )
        for s in result.steps:
            console.print(f"  {s['ts']}  {s['step']}")
        if gauge is not None:
            gauge(control.variants())

    if every_s is None:
        result = run_cycle(cfg, control)
        report(result)
        raise typer.Exit(0 if result.outcome in ("skipped", "promoted") else 1)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"retraining every {every} (Ctrl-C stops)")
    run_schedule(cfg, control, every_s, stop.is_set, report)


def _staleness_server(port: int) -> Any:
    """Start /metrics with the serving versions' age; returns an updater."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    reg = CollectorRegistry()
    age = Gauge(
        "ray_app_model_age_seconds",
        "Seconds since the serving model version was created.",
        ["model", "version", "variant"],
        registry=reg,
    )
    start_http_server(port, registry=reg)

    def update(variants: list[dict[str, Any]]) -> None:
        now = dt.datetime.now(dt.UTC)
        age.clear()
        for v in variants:
            m = re.match(r"v(\d{8}T\d{6})", str(v.get("version", "")))
            if m:
                created = dt.datetime.strptime(m[1], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
                age.labels(v["model"], v["version"], v["name"]).set((now - created).total_seconds())

    return update


def register(app: typer.Typer) -> None:
    """Add ``retrain`` to the root app."""
    app.command("retrain")(retrain_cmd)
