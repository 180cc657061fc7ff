"""``ray-app serve``: the Ray Serve app against a registry, until Ctrl-C."""

from __future__ import annotations

from typing import Annotated

import typer

from ray_app.commands.common import ConfigOpt, RayAddressOpt, RegistryOverrideOpt, console
from ray_app.config import load_config
from ray_app.errors import UserError


def serve_cmd(
    registry: RegistryOverrideOpt = None,
    model: Annotated[str | None, typer.Option(help="Primary model name.")] = None,
    port: Annotated[int, typer.Option(help="HTTP port (course platforms probe 8082).")] = 8000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    config: ConfigOpt = None,
    ray_address: RayAddressOpt = None,
    haproxy: Annotated[
        bool,
        typer.Option(
            help="Local Ray only: HAProxy instead of Serve's Python proxy (faster; binds "
            "replica ports on all interfaces). On a cluster set RAY_SERVE_ENABLE_HA_PROXY=1 "
            "on the nodes."
        ),
    ] = False,
) -> None:
    """Run the Serve app locally against a registry until Ctrl-C."""
    from ray_app.runtime import init_ray, wait_for_stop_signal
    from ray_app.serving.config import ServeArgs

    args = load_config(ServeArgs, config, registry=registry, model=model)
    if haproxy and ray_address:
        raise UserError(
            "--haproxy starts a local Ray; on a cluster drop --haproxy and set "
            "RAY_SERVE_ENABLE_HA_PROXY=1 on the nodes"
        )
    dashboard = init_ray(ray_address, serve_haproxy=haproxy)
    # Only now: Serve reads its mode variables, which init_ray sets, when ray.serve is imported.
    from ray import serve

    from ray_app.serving.run import start_serving

    start_serving(args, host, port)
    console.print(
        f"serving on http://{host}:{port}/recommend/<user_id>  (Ray dashboard: {dashboard})"
    )
    try:
        wait_for_stop_signal()
    finally:
        serve.shutdown()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve")(serve_cmd)
