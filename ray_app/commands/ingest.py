"""``ray-app ingest``: Kafka events into exactly-once Parquet snapshots (+ dead letters)."""

from __future__ import annotations

from typing import Annotated

import typer

from ray_app.commands.common import (
    BootstrapOpt,
    ConfigOpt,
    RayAddressOpt,
    SnapshotDirOverrideOpt,
    console,
    kafka_settings,
)
from ray_app.config import load_config


def _ports(ports: list[int]) -> str:
    return str(ports[0]) if len(ports) == 1 else f"{ports[0]}-{ports[-1]}"


def ingest_cmd(
    bootstrap_servers: BootstrapOpt = "",
    topic: Annotated[
        list[str] | None, typer.Option("--topic", "-t", help="Topic(s) to consume.")
    ] = None,
    snapshot_dir: SnapshotDirOverrideOpt = None,
    group: Annotated[str | None, typer.Option(help="Consumer group id.")] = None,
    until_idle: Annotated[
        float | None, typer.Option(help="Exit after this many idle seconds.")
    ] = None,
    dialect: Annotated[str | None, typer.Option(help="line | json")] = None,
    consumers: Annotated[
        int, typer.Option(min=1, help="Consumer actors on Ray in one group (1: in this process).")
    ] = 1,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus /metrics on this port; with --consumers N, consumer i "
            "serves on PORT+i (PORT..PORT+N-1)."
        ),
    ] = None,
    config: ConfigOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Consume events into exactly-once Parquet snapshots (+ dead letters)."""
    from ray_app.broker.embedded import kafka_endpoint
    from ray_app.ingest.config import IngestConfig
    from ray_app.ingest.run import metrics_ports, run_ingest
    from ray_app.runtime import init_ray
    from ray_app.snapshots.store import SnapshotStore

    cfg = load_config(
        IngestConfig,
        config,
        topics=topic or None,
        snapshot_dir=snapshot_dir,
        group_id=group,
        until_idle_s=until_idle,
        dialect=dialect,
    )
    # Resolved here, where the user is: consumer actors may run in another directory or node.
    store = SnapshotStore.at(cfg.snapshot_dir)
    cfg = cfg.model_copy(update={"snapshot_dir": store.location})
    settings = kafka_settings(bootstrap_servers)
    ports = metrics_ports(metrics_port, consumers)
    with kafka_endpoint(settings.bootstrap_servers) as servers:
        settings = settings.model_copy(update={"bootstrap_servers": servers})
        if consumers > 1:
            init_ray(ray_address)
        if ports:
            console.print(f"Prometheus /metrics on port {_ports(ports)}")
        stats = run_ingest(settings, cfg, consumers=consumers, metrics_port=metrics_port)
    metrics = f"; /metrics was on port {_ports(ports)}" if ports else ""
    console.print(
        f"ingested {stats.records:,} records → {stats.snapshot_rows:,} snapshot rows, "
        f"{stats.dead_letters:,} dead letters, {stats.batches} batches, "
        f"{len(stats.files)} files under {store.name} in {stats.seconds:.1f}s "
        f"by {consumers} consumer{'s' if consumers > 1 else ''}{metrics}"
    )


def register(app: typer.Typer) -> None:
    """Add ``ingest`` to ``app``."""
    app.command("ingest")(ingest_cmd)
