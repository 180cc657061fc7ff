"""``ray-app broker``: the embedded Kafka-protocol broker, for running stages by hand."""

from __future__ import annotations

from typing import Annotated

import typer

from ray_app.commands.common import console


def broker_cmd(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 9092,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in memory) until Ctrl-C."""
    from ray_app.broker.embedded import EmbeddedBroker
    from ray_app.runtime import wait_for_stop_signal

    with EmbeddedBroker(port=port or None) as b:
        console.print(
            f"embedded broker listening on [bold]{b.bootstrap_servers}[/bold]; Ctrl-C stops it"
        )
        wait_for_stop_signal()


def register(app: typer.Typer) -> None:
    """Add ``broker`` to ``app``."""
    app.command("broker")(broker_cmd)
