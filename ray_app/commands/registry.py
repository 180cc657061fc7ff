"""``ray-app registry``: list and verify signed model versions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ray_app.commands.common import DEFAULT_REGISTRY, RegistryOpt, console


def list_cmd(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Models and versions with their headline metrics."""
    from ray_app.registry.store import Registry

    reg = Registry(registry)
    table = Table("model", "version", "created", "metrics")
    for name in reg.models():
        for v in reg.versions(name):
            m = reg.read_manifest(name, v)
            metrics = ", ".join(
                f"{k}={val:.4f}"
                for k, val in sorted(m.get("metrics", {}).items())
                if isinstance(val, float)
            )
            table.add_row(name, v, m.get("created_at", ""), metrics)
    console.print(table)


def verify_cmd(
    name: Annotated[str, typer.Argument(help="Model name, e.g. itemknn.")],
    version: Annotated[str | None, typer.Argument(help="Default: latest.")] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Check a version's signature and file hashes."""
    from ray_app.registry.store import Registry

    mv = Registry(registry).fetch(name, version)
    console.print(
        f"[green]ok[/green] {mv.name} {mv.version}: signature and "
        f"{len(mv.manifest['files'])} file hashes verified"
    )


def register(app: typer.Typer) -> None:
    """Add the ``registry`` group (``list``, ``verify``) to ``app``."""
    registry = typer.Typer(help="Inspect and verify the model registry.", no_args_is_help=True)
    registry.command("list")(list_cmd)
    registry.command("verify")(verify_cmd)
    app.add_typer(registry, name="registry")
