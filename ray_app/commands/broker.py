"""``ray-app broker``: the embedded Kafka-protocol broker, for running stages by hand."""

from __future__ import annotations

from typing import Annotated

import typer

from ray_app.broker.storage import MEMORY
from ray_app.commands.common import console


def broker_cmd(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 9092,
    schemas: Annotated[
        bool,
        typer.Option(
            help="Refuse records on the JSON topics that do not match their published schemas."
        ),
    ] = True,
    schema_prefix: Annotated[
        str,
        typer.Option(help="Prefix of the JSON topics to validate (ingest's json_topic_prefix)."),
    ] = "events",
    storage: Annotated[
        str,
        typer.Option(
            help="Where the log lives: memory://tansu/ (lost on stop) or s3://bucket/prefix "
            "(durable; endpoint and credentials in the URI or AWS_* variables)."
        ),
    ] = MEMORY,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu) until Ctrl-C."""
    from ray_app.broker.embedded import EmbeddedBroker
    from ray_app.events.json_dialect import JSON_KINDS, topic_for
    from ray_app.runtime import wait_for_stop_signal

    with EmbeddedBroker(
        port=port or None, schema_prefix=schema_prefix if schemas else None, storage=storage
    ) as b:
        console.print(
            f"embedded broker listening on [bold]{b.bootstrap_servers}[/bold]; Ctrl-C stops it"
        )
        where = "durable" if b.storage.durable else "in memory: lost when it stops"
        console.print(f"log storage: {b.storage.url} ({where})")
        if schemas:
            topics = ", ".join(topic_for(schema_prefix, kind) for kind in JSON_KINDS)
            console.print(f"records on {topics} must match their schemas (`ray-app schemas`)")
        else:
            console.print("schema validation is off")
        wait_for_stop_signal()


def register(app: typer.Typer) -> None:
    """Add ``broker`` to ``app``."""
    app.command("broker")(broker_cmd)
