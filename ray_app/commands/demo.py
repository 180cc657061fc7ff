"""``ray-app demo`` (``make demo``): the whole loop on embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_app.commands.common import BootstrapOpt, console


def demo_cmd(
    once: Annotated[
        bool, typer.Option("--once", help="Check one HTTP answer, shut down, exit 0.")
    ] = False,
    users: Annotated[
        int | None, typer.Option(help="Replay only the first N users (default: all 943).")
    ] = None,
    port: Annotated[int, typer.Option(help="HTTP port for the Serve app.")] = 8000,
    workdir: Annotated[Path, typer.Option(help="Where snapshots and the registry go.")] = Path(
        "data/demo"
    ),
    bootstrap_servers: BootstrapOpt = "",
) -> None:
    """The whole loop on embedded defaults: broker, fetch, replay, ingest, train, serve."""
    from ray_app.demo import DemoConfig, run_demo

    opts = DemoConfig(
        once=once, users=users, port=port, workdir=workdir, bootstrap_servers=bootstrap_servers
    )
    raise typer.Exit(run_demo(opts, console))


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo")(demo_cmd)
