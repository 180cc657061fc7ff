"""``ray-app replay``: MovieLens ratings as time-ordered line-dialect events into Kafka."""

from __future__ import annotations

from typing import Annotated

import typer

from ray_app.commands.common import BootstrapOpt, console, kafka_settings, progress_bar
from ray_app.config import load_config


def replay_cmd(
    bootstrap_servers: BootstrapOpt = "",
    topic: Annotated[str, typer.Option(help="Target topic.")] = "movielog",
    dataset: Annotated[str, typer.Option(help="MovieLens dataset to replay.")] = "ml-100k",
    users: Annotated[int | None, typer.Option(help="Only the first N users.")] = None,
    max_events: Annotated[int | None, typer.Option(help="Stop after N events.")] = None,
    rate: Annotated[
        float | None, typer.Option(help="Events per second (default: as fast as possible).")
    ] = None,
    watch_minutes: Annotated[int, typer.Option(help="Watch events before each rating.")] = 3,
    partitions: Annotated[int, typer.Option(help="Partitions if the topic must be created.")] = 2,
) -> None:
    """Replay MovieLens ratings as time-ordered line-dialect events into Kafka."""
    from ray_app.broker.embedded import kafka_endpoint
    from ray_app.replay.events import ReplayConfig
    from ray_app.replay.run import replay_movielens

    cfg = load_config(
        ReplayConfig,
        topic=topic,
        dataset=dataset,
        users=users,
        max_events=max_events,
        rate_per_s=rate,
        watch_minutes=watch_minutes,
        partitions=partitions,
    )
    settings = kafka_settings(bootstrap_servers)
    with kafka_endpoint(settings.bootstrap_servers) as servers:
        settings = settings.model_copy(update={"bootstrap_servers": servers})
        with progress_bar("replay") as update:
            stats = replay_movielens(settings, cfg, progress=update)
        console.print(
            f"replayed {stats.events:,} events ({stats.watch:,} watch, {stats.rate:,} rate) for "
            f"{stats.users:,} users to {topic!r} on {servers} in {stats.seconds:.1f}s"
        )


def register(app: typer.Typer) -> None:
    """Add ``replay`` to ``app``."""
    app.command("replay")(replay_cmd)
