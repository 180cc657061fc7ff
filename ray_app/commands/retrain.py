"""``ray-app retrain``: one cycle, or ``--every 3h`` forever, with a staleness gauge."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from ray_app.commands.common import ConfigOpt, RayAddressOpt, console, require_snapshot_dir


def retrain_cmd(
    config: ConfigOpt = None,
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
    ray_address: RayAddressOpt = None,
) -> None:
    """New snapshots → train → offline gate → register → canary → promote or roll back."""
    from prometheus_client import start_http_server

    from ray_app.config import load_config
    from ray_app.monitoring.staleness import StalenessGauge, serving_created_at
    from ray_app.registry.store import Registry
    from ray_app.retraining.config import RetrainConfig, parse_every
    from ray_app.retraining.control import HttpServiceControl
    from ray_app.retraining.cycle import (
        CycleResult,
        read_serving,
        require_same_model,
        run_cycle,
        run_schedule,
    )
    from ray_app.runtime import init_ray, located_errors

    # Bad config, data, token, URL or slots end here in one line (UserError), before Ray
    # starts; a location missing here is reported with the node and RAY_APP_HOME it was
    # looked for with, since in a Ray job that is not where the user submitted from.
    cfg = load_config(RetrainConfig, config)
    every_s = parse_every(every) if every else None
    control = HttpServiceControl(serve_url, admin_token)
    registry = Registry(cfg.registry, cfg.signing)
    with located_errors(FileNotFoundError):  # the manifest of what serves
        serving = read_serving(cfg, control, registry)
    require_same_model(cfg, serving)
    with located_errors():
        require_snapshot_dir(cfg.snapshot_dir)
    init_ray(ray_address)
    gauge: StalenessGauge | None = None
    if metrics_port:
        gauge = StalenessGauge()
        gauge.update(serving_created_at(registry, serving.variants))
        start_http_server(metrics_port, registry=gauge.registry)

    def report(result: CycleResult) -> None:
        console.print(
            f"[bold]{result.outcome}[/bold] {result.model} {result.version or ''}: {result.reason}"
        )
        for s in result.steps:
            console.print(f"  {s['ts']}  {s['step']}")
        if gauge is not None:
            gauge.update(serving_created_at(registry, control.variants()))

    if every_s is None:
        result = run_cycle(cfg, control)
        report(result)
        raise typer.Exit(0 if result.outcome in ("skipped", "promoted") else 1)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"retraining every {every} (Ctrl-C stops)")
    run_schedule(cfg, control, every_s, stop.is_set, report)


def register(app: typer.Typer) -> None:
    """Add ``retrain`` to the root app."""
    app.command("retrain")(retrain_cmd)
