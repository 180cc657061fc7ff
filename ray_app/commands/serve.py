"""``ray-app serve``: the Ray Serve app against a registry, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_app.commands.common import RayAddressOpt, RegistryOverrideOpt, console
from ray_app.errors import UserError


def serve_cmd(
    registry: RegistryOverrideOpt = None,
    model: Annotated[str | None, typer.Option(help="Primary model name.")] = None,
    port: Annotated[int, typer.Option(help="HTTP port (course platforms probe 8082).")] = 8000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="serve_config.yaml (the args of its `recommender` app) or a YAML of ServeArgs "
            "fields; flags override it.",
        ),
    ] = None,
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
    from ray_app.runtime import cluster_address, init_ray, wait_for_stop_signal
    from ray_app.serving.config import load_serve_args
    from ray_app.serving.security import KeyStore

    args = load_serve_args(config, registry=registry, model=model)
    joining = cluster_address(ray_address)
    if haproxy and joining:
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
    if not joining and not len(KeyStore(args.api_keys)):
        # A local Ray's replicas see this process's environment, so this is what they hold.
        console.print(
            "no admin API keys: /admin answers 401 (set RAY_APP_ADMIN_TOKEN or "
            "RAY_APP_API_KEYS before starting, or api_keys in the config)"
        )
    try:
        wait_for_stop_signal()
    finally:
        serve.shutdown()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve")(serve_cmd)
