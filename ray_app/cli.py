"""The ``ray-app`` command line (also ``python -m ray_app``)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ray_app.config import ConfigError, load_config

app = typer.Typer(
    help="Movie recommendations on Ray: Kafka → Parquet → train → registry → Serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(
    help="Datasets: fetch MovieLens, generate synthetic data.", no_args_is_help=True
)
registry_app = typer.Typer(help="Inspect and verify the model registry.", no_args_is_help=True)
app.add_typer(data_app, name="data")
snapshots_app = typer.Typer(help="Inspect and maintain Parquet snapshots.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")
app.add_typer(snapshots_app, name="snapshots")
# Wide enough for the metrics table when output is a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 140)

BootstrapOpt = Annotated[
    str,
    typer.Option(
        "--bootstrap-servers",
        "-b",
        envvar="RAY_APP_KAFKA_BOOTSTRAP_SERVERS",
        help="Kafka host:port list. Empty: start the embedded Tansu broker for this command.",
    ),
]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # kafka-python logs every reconnect and slow IO-loop tick at WARNING; Ray Data logs
        # progress at INFO. Neither helps someone reading the demo's output.
        logging.getLogger("kafka").setLevel(logging.ERROR)
        logging.getLogger("ray.data").setLevel(logging.WARNING)


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


def kafka_settings(bootstrap: str) -> Any:
    from ray_app.broker.settings import KafkaSettings

    try:
        return KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()
    except Exception as exc:
        _fail(str(exc))


# ---- data ---------------------------------------------------------------------------------
@data_app.command("fetch")
def data_fetch(
    name: Annotated[
        str, typer.Argument(help="ml-100k | ml-1m | ml-25m | ml-latest-small")
    ] = "ml-100k",
    root: Annotated[
        Path | None, typer.Option(help="Cache directory (default: user cache dir).")
    ] = None,
) -> None:
    """Download (official GroupLens zip, else the recbole wheel copy for ml-100k) and verify."""
    from ray_app.data.movielens import load

    try:
        ml = load(name, root)
    except (ValueError, RuntimeError) as exc:
        _fail(str(exc))
    console.print(
        f"{ml.name}: {len(ml.ratings):,} ratings, {ml.ratings.user_id.nunique():,} users, "
        f"{len(ml.movies):,} movies (source: {ml.source})"
    )


# ---- broker -------------------------------------------------------------------------------
@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 9092,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in memory) until Ctrl-C."""
    from ray_app.broker.embedded import EmbeddedBroker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port=port or None) as b:
        console.print(
            f"embedded broker listening on [bold]{b.bootstrap_servers}[/bold]; Ctrl-C stops it"
        )
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


# ---- replay -------------------------------------------------------------------------------
@app.command()
def replay(
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

    settings = kafka_settings(bootstrap_servers)
    with kafka_endpoint(settings.bootstrap_servers) as servers:
        stats = do_replay(
            servers,
            settings,
            topic=topic,
            dataset=dataset,
            users=users,
            max_events=max_events,
            rate=rate,
            watch_minutes=watch_minutes,
            partitions=partitions,
        )
        console.print(
            f"replayed {stats.events:,} events ({stats.watch:,} watch, {stats.rate:,} rate) for "
            f"{stats.users:,} users to {topic!r} on {servers} in {stats.seconds:.1f}s"
        )


def do_replay(
    servers: str, settings: Any, *, topic: str, dataset: str = "ml-100k", **opts: Any
) -> Any:
    """Shared by ``replay`` and ``demo``."""
    from ray_app.broker.embedded import ensure_topics
    from ray_app.data.movielens import load
    from ray_app.replay.events import ReplayConfig, build_lines, produce

    partitions = opts.pop("partitions", 2)
    cfg = load_config(ReplayConfig, topic=topic, **opts)
    ml = load(dataset)
    events = build_lines(ml.ratings, cfg)
    kw = settings.model_copy(update={"bootstrap_servers": servers}).client_kwargs()
    ensure_topics(
        servers, {topic: partitions}, **{k: v for k, v in kw.items() if k != "bootstrap_servers"}
    )
    with Progress(
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("replay", total=len(events))
        return produce(events, kw, cfg, progress=lambda n: progress.advance(task, n))


# ---- ingest -------------------------------------------------------------------------------
@app.command()
def ingest(
    bootstrap_servers: BootstrapOpt = "",
    topic: Annotated[
        list[str] | None, typer.Option("--topic", "-t", help="Topic(s) to consume.")
    ] = None,
    snapshot_dir: Annotated[Path | None, typer.Option(help="Where Parquet snapshots go.")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group id.")] = None,
    until_idle: Annotated[
        float | None, typer.Option(help="Exit after this many idle seconds.")
    ] = None,
    dialect: Annotated[str | None, typer.Option(help="line | json")] = None,
    consumers: Annotated[
        int, typer.Option(help="Consumer actors on Ray (1: in this process).")
    ] = 1,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics here.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML IngestConfig.")] = None,
) -> None:
    """Consume events into exactly-once Parquet snapshots (+ dead letters)."""
    from ray_app.broker.embedded import kafka_endpoint
    from ray_app.ingest.config import IngestConfig

    try:
        cfg = load_config(
            IngestConfig,
            config,
            topics=topic or None,
            snapshot_dir=snapshot_dir,
            group_id=group,
            until_idle_s=until_idle,
            dialect=dialect,
        )
    except ConfigError as exc:
        _fail(str(exc))
    settings = kafka_settings(bootstrap_servers)
    with kafka_endpoint(settings.bootstrap_servers) as servers:
        settings = settings.model_copy(update={"bootstrap_servers": servers})
        stats = do_ingest(settings, cfg, consumers=consumers, metrics_port=metrics_port)
    console.print(
        f"ingested {stats.records:,} records → {stats.snapshot_rows:,} snapshot rows, "
        f"{stats.dead_letters:,} dead letters, {stats.batches} batches, "
        f"{len(stats.files)} files under {cfg.snapshot_dir} in {stats.seconds:.1f}s"
    )


def do_ingest(settings: Any, cfg: Any, consumers: int = 1, metrics_port: int | None = None) -> Any:
    """Run one consumer here (SIGTERM/SIGINT flush and commit) or N actors on Ray."""
    from ray_app.ingest.consumer import SnapshotConsumer
    from ray_app.ingest.metrics import IngestMetrics

    if consumers > 1:
        from ray_app.ingest.scale import run_consumer_actors
        from ray_app.runtime import init_ray

        init_ray()
        return run_consumer_actors(settings, cfg, consumers)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        metrics = IngestMetrics()
        if metrics_port:
            metrics.serve(metrics_port)
        return SnapshotConsumer(settings, cfg, metrics, stop).run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@snapshots_app.command("compact")
def snapshots_compact(
    snapshot_dir: Annotated[Path, typer.Option(help="Snapshot directory.")] = Path(
        "data/snapshots"
    ),
    closed_before: Annotated[
        str | None,
        typer.Option(help="Compact dates before this (YYYY-MM-DD); default: all but the newest."),
    ] = None,
) -> None:
    """Merge small files of closed dates, keeping the exactly-once naming."""
    from ray_app.snapshots.protocol import compact

    r = compact(snapshot_dir, closed_before)
    console.print(
        f"compacted {r.groups} partition-dates: {r.files_before} files → {r.files_after} ({r.rows:,} rows)"
    )


@snapshots_app.command("stats")
def snapshots_stats(
    snapshot_dir: Annotated[Path, typer.Option(help="Snapshot directory.")] = Path(
        "data/snapshots"
    ),
) -> None:
    """Committed batches, files, rows and dead letters per topic-partition."""
    from ray_app.snapshots.protocol import committed_batches
    from ray_app.snapshots.read import snapshot_files

    table = Table("topic", "partition", "batches", "first offset", "last offset")
    per: dict[tuple[str, int], list[Any]] = {}
    for b in committed_batches(snapshot_dir):
        per.setdefault((b.topic, b.partition), []).append(b)
    for (t, p), bs in sorted(per.items()):
        table.add_row(t, str(p), str(len(bs)), str(bs[0].first), str(bs[-1].last))
    console.print(table)
    console.print(f"{len(snapshot_files(snapshot_dir))} snapshot files")


# ---- train --------------------------------------------------------------------------------
@app.command()
def train(
    snapshot_dir: Annotated[
        Path | None, typer.Option(help="Snapshot directory to train on.")
    ] = None,
    registry: Annotated[str | None, typer.Option(help="Registry root (path or URI).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML TrainConfig.")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster (default: local).")
    ] = None,
) -> None:
    """Fit, evaluate and register the configured models on Ray."""
    from ray_app.runtime import init_ray
    from ray_app.training.job import TrainConfig, run_training

    try:
        cfg = load_config(TrainConfig, config, snapshot_dir=snapshot_dir, registry=registry)
    except ConfigError as exc:
        _fail(str(exc))
    init_ray(ray_address)
    result = run_training(cfg)
    print_train_result(result)


SUMMARY_METRICS = (
    "ndcg@10",
    "recall@10",
    "precision@10",
    "mrr@10",
    "hit@10",
    "coverage",
    "novelty",
    "gini",
)


def print_train_result(result: Any) -> None:
    """The train job's summary: data used, then one row of offline metrics per model."""
    console.print(
        f"trained on {result.interactions:,} interactions ({result.users:,} users, "
        f"{result.items:,} items) from {result.snapshot_files} snapshot files in {result.seconds:.1f}s"
    )
    table = Table(title="offline evaluation (per-user holdout, full ranking, seen items excluded)")
    present = {k for m in result.metrics.values() for k in m}
    keys = [k for k in SUMMARY_METRICS if k in present]
    table.add_column("model")
    table.add_column("version")
    for k in keys:
        table.add_column(k, justify="right")
    for mv in result.versions:
        m = result.metrics[mv.name]
        table.add_row(mv.name, mv.version, *(f"{m.get(k, float('nan')):.4f}" for k in keys))
    console.print(table)


# ---- serve --------------------------------------------------------------------------------
@app.command()
def serve(
    registry: Annotated[str | None, typer.Option(help="Registry root.")] = None,
    model: Annotated[str | None, typer.Option(help="Primary model name.")] = None,
    port: Annotated[int, typer.Option(help="HTTP port (course platforms probe 8082).")] = 8000,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    config: Annotated[Path | None, typer.Option(help="YAML ServeArgs.")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster (default: local).")
    ] = None,
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
    from ray_app.runtime import init_ray
    from ray_app.serving.config import ServeArgs

    try:
        args = load_config(ServeArgs, config, registry=registry, model=model)
    except ConfigError as exc:
        _fail(str(exc))
    if haproxy and ray_address:
        _fail(
            "--haproxy starts a local Ray; on a cluster set RAY_SERVE_ENABLE_HA_PROXY=1 on the nodes"
        )
    dashboard = init_ray(ray_address, serve_haproxy=haproxy)
    start_serving(args, host, port)
    console.print(
        f"serving on http://{host}:{port}/recommend/<user_id>  (Ray dashboard: {dashboard})"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        from ray import serve as rserve

        rserve.shutdown()


def start_serving(args: Any, host: str, port: int) -> None:
    """Start Serve's HTTP proxy on ``host:port`` and deploy the app."""
    from ray import serve as rserve

    from ray_app.serving.app import build_app

    rserve.start(http_options={"host": host, "port": port})
    rserve.run(build_app(args), name="recommender", route_prefix="/", blocking=False)


@app.command("recommend-all")
def recommend_all_cmd(
    model: Annotated[str, typer.Option(help="Registry model name.")] = "ease",
    out: Annotated[Path, typer.Option(help="Output directory (Parquet).")] = Path(
        "data/recommendations"
    ),
    registry: Annotated[str, typer.Option(help="Registry root.")] = "data/registry",
    version: Annotated[str | None, typer.Option(help="Version (default: latest).")] = None,
    k: Annotated[int, typer.Option(min=1, max=1000, help="Items per user.")] = 20,
    ray_address: Annotated[
        str | None, typer.Option(help="Existing Ray cluster (default: local).")
    ] = None,
) -> None:
    """Ray Data batch inference: top-k for every user a registry version knows."""
    from ray_app.runtime import init_ray
    from ray_app.training.batch_inference import recommend_all

    init_ray(ray_address)
    stats = recommend_all(registry, model, out, version=version, k=k)
    console.print(
        f"{stats['users_scored']:,} of {stats['users']:,} users scored, {stats['rows']:,} rows → {out}"
    )


# ---- registry -----------------------------------------------------------------------------
@registry_app.command("list")
def registry_list(
    registry: Annotated[str, typer.Option(help="Registry root.")] = "data/registry",
) -> None:
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


@registry_app.command("verify")
def registry_verify(
    name: str,
    version: Annotated[str | None, typer.Argument(help="Default: latest.")] = None,
    registry: Annotated[str, typer.Option(help="Registry root.")] = "data/registry",
) -> None:
    """Check a version's signature and file hashes."""
    from ray_app.registry.signing import SignatureError
    from ray_app.registry.store import Registry

    try:
        mv = Registry(registry).fetch(name, version)
    except (SignatureError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(
        f"[green]ok[/green] {mv.name} {mv.version}: signature and {len(mv.manifest['files'])} file hashes verified"
    )


# ---- demo ---------------------------------------------------------------------------------
@app.command()
def demo(
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
    from ray_app.demo import DemoOptions, run_demo

    code = run_demo(
        DemoOptions(
            once=once, users=users, port=port, workdir=workdir, bootstrap_servers=bootstrap_servers
        ),
        console,
    )
    raise typer.Exit(code)


def _register_commands() -> None:
    # Capability groups live in ray_app/commands/ so each stays a small module of its own.
    from ray_app.commands import loop, models, retrain

    loop.register(app)
    retrain.register(app)
    models.register(app, data_app)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    app()
