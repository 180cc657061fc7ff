"""``ray-app schemas``: the JSON Schemas of the JSON-dialect topics (export, check, publish)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ray_app.commands.common import console
from ray_app.errors import UserError


def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the schema files to.")],
    prefix: Annotated[
        str, typer.Option(help="Topic prefix (ingest's json_topic_prefix).")
    ] = "events",
    fmt: Annotated[
        Literal["registry", "tansu"],
        typer.Option(
            "--format",
            help="registry: <topic>-value.json, the record schema, for a schema registry subject; "
            "tansu: <topic>.json for `tansu broker --schema-registry file://DIR`.",
        ),
    ] = "registry",
) -> None:
    """Write the latest published schema of each JSON topic."""
    from ray_app.events.json_schema import write_schemas

    for path in write_schemas(out, prefix, fmt):
        console.print(f"wrote {path}")


def check_cmd() -> None:
    """Check the published schemas: additive-only history, and wire models all published."""
    from ray_app.events.json_dialect import JSON_KINDS
    from ray_app.events.json_schema import check_published, published_versions

    problems = check_published()
    if problems:
        raise UserError("; ".join(problems))
    for kind in JSON_KINDS:
        versions = ", ".join(f"v{v}" for v in published_versions(kind))
        console.print(f"{kind}: {versions} (additive only; the latest matches the wire model)")


def publish_cmd(
    to: Annotated[
        Path | None,
        typer.Option("--dir", help="Published-schema directory [default: the package's own]."),
    ] = None,
) -> None:
    """After changing a wire model (ray_app/events/records.py): add its new schema version."""
    from ray_app.events.json_schema import PUBLISHED_DIR, publish

    written = publish(to or PUBLISHED_DIR)
    for kind, version in written:
        console.print(f"published {kind} v{version}")
    if not written:
        console.print("nothing to publish: every wire model matches its latest schema")


def register(app: typer.Typer) -> None:
    """Add the ``schemas`` group (``export``, ``check``, ``publish``) to ``app``."""
    schemas = typer.Typer(
        help="JSON Schemas of the JSON-dialect topics, as the embedded broker enforces them.",
        no_args_is_help=True,
    )
    schemas.command("export")(export_cmd)
    schemas.command("check")(check_cmd)
    schemas.command("publish")(publish_cmd)
    app.add_typer(schemas, name="schemas")
