"""``ray-app demo`` (``make demo``): the whole closed loop on embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_app.commands.common import BootstrapOpt, RayAddressOpt, console
from ray_app.config import validate_config


def demo_cmd(
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Run one full cycle, print the summary and exit 0 only if every stage did its "
            "job (events ingested, reco events joined to later watches, a version promoted).",
        ),
    ] = False,
    users: Annotated[
        int | None, typer.Option(help="MovieLens users to replay and simulate (default: all 943).")
    ] = None,
    port: Annotated[int, typer.Option(help="HTTP port for the Serve app.")] = 8000,
    workdir: Annotated[
        str, typer.Option(help="Local directory for snapshots, the registry and the report.")
    ] = "data/demo",
    config_dir: Annotated[
        Path, typer.Option(help="Directory holding serve_config.yaml and configs/.")
    ] = Path("."),
    sim_rate: Annotated[
        float, typer.Option(help="Requests per second from the simulated users.")
    ] = 40.0,
    sim_requests: Annotated[
        int, typer.Option(help="Requests before the first online evaluation.")
    ] = 400,
    window: Annotated[
        float, typer.Option("--window-s", help="Attribution window in seconds.")
    ] = 120.0,
    eval_every: Annotated[
        float, typer.Option("--eval-every-s", help="Seconds between evaluations (no --once).")
    ] = 60.0,
    retrain_every: Annotated[
        float, typer.Option("--retrain-every-s", help="Seconds between retrains (no --once).")
    ] = 300.0,
    bootstrap_servers: BootstrapOpt = "",
    ray_address: RayAddressOpt = None,
) -> None:
    """The whole loop: broker, MovieLens, replay, ingest on Ray, train, serve, simulated users,
    online evaluation, experiment report and retraining; until Ctrl-C, or once."""
    from ray_app.demo.config import DemoConfig
    from ray_app.demo.pipeline import run_demo

    opts = validate_config(
        DemoConfig,
        {
            "once": once,
            "users": users,
            "port": port,
            "workdir": workdir,
            "config_dir": config_dir,
            "bootstrap_servers": bootstrap_servers,
            "ray_address": ray_address,
            "sim_rate": sim_rate,
            "sim_requests": sim_requests,
            "window_s": window,
            "eval_every_s": eval_every,
            "retrain_every_s": retrain_every,
        },
    )
    raise typer.Exit(run_demo(opts, console))


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo")(demo_cmd)
