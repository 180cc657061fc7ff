"""What every ``ray-app`` command shares: the console, the shared options, and how an error a
user can fix is shown (one line, no traceback unless ``--debug``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ray_app.broker.settings import KafkaSettings
from ray_app.config import ConfigError, validation_message
from ray_app.errors import UserError

# Wide enough for the metrics tables when output is a pipe or a CI log.
console = Console(width=None if sys.stdout.isatty() else 140)

DEFAULT_REGISTRY = "data/registry"
DEFAULT_SNAPSHOT_DIR = "data/snapshots"

BootstrapOpt = Annotated[
    str,
    typer.Option(
        "--bootstrap-servers",
        "-b",
        envvar="RAY_APP_KAFKA_BOOTSTRAP_SERVERS",
        help="Kafka host:port list. Empty: start the embedded Tansu broker for this command.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to join: its GCS address HEAD:6379, ray://HEAD:10001, or auto (the "
        "last `ray start` here); `local` starts a local Ray. Default: RAY_ADDRESS, else a "
        "local Ray. A cluster that does not answer within 3 s is an error.",
    ),
]
RegistryOpt = Annotated[
    str, typer.Option("--registry", help="Registry root: a path or a pyarrow filesystem URI.")
]
RegistryOverrideOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        help=f"Registry root (path or URI); overrides --config [default: {DEFAULT_REGISTRY}].",
    ),
]
SnapshotDirOpt = Annotated[
    str,
    typer.Option(
        "--snapshot-dir",
        help="Snapshots (what `ray-app ingest` wrote): a path, file://… or s3://bucket/prefix.",
    ),
]
SnapshotDirOverrideOpt = Annotated[
    str | None,
    typer.Option(
        "--snapshot-dir",
        help="Snapshots: a path, file://… or s3://bucket/prefix; overrides --config "
        f"[default: {DEFAULT_SNAPSHOT_DIR}].",
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="YAML file of the command's config fields; flags override it."),
]


def kafka_settings(bootstrap_servers: str) -> KafkaSettings:
    """Kafka settings from ``-b`` (when given) and ``RAY_APP_KAFKA_*``; ConfigError if invalid."""
    try:
        if bootstrap_servers:
            return KafkaSettings(bootstrap_servers=bootstrap_servers)
        return KafkaSettings()
    except ValidationError as exc:
        raise ConfigError(
            f"invalid Kafka settings (-b or RAY_APP_KAFKA_*): {validation_message(exc)}"
        ) from exc


def require_snapshot_dir(location: str | Path) -> str:
    """``location`` (a path or URI) if it exists, else a UserError saying how to get snapshots."""
    from ray_app.snapshots.store import SnapshotStore

    store = SnapshotStore.at(location)
    if not store.exists():
        raise UserError(
            f"snapshot directory {store.name} does not exist: run `ray-app ingest "
            f"--snapshot-dir {location}` first, or point --snapshot-dir at what ingest wrote"
        )
    return str(location)


@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Show errors of ``kinds`` raised in the block as one-line user errors: for stages that
    document e.g. ValueError for bad input rather than raising UserError."""
    try:
        yield
    except kinds as exc:
        raise UserError(str(exc)) from exc


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on the console; the block gets an ``update(done, total)`` callback."""
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def error_message(exc: BaseException) -> str | None:
    """The one line to show for an error the user can fix, or None for a bug (whose traceback
    must stay visible)."""
    # Imported here: only a failing command pays for them.
    import httpx

    from ray_app.registry.signing import SignatureError

    # Ray re-raises a task's error as a RayTaskError that is also an instance of the original
    # class; its text is the remote traceback, so judge and show the original instead.
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Exception) and isinstance(exc, type(cause)):
        exc = cause
    text: str
    if isinstance(exc, UserError | FileNotFoundError | NotADirectoryError | PermissionError):
        text = str(exc)
    elif isinstance(exc, SignatureError):
        text = f"registry version failed verification: {exc}; register it again or pick another"
    elif isinstance(exc, httpx.HTTPStatusError):
        r = exc.response
        text = f"{exc.request.method} {exc.request.url} answered {r.status_code} {r.reason_phrase}"
        if r.status_code in (401, 403):
            text += ": check the admin token (--admin-token or RAY_APP_ADMIN_TOKEN)"
    elif isinstance(exc, httpx.TransportError):
        text = f"could not reach the service: {exc}; check the URL and that it is running"
    else:
        return None
    return " ".join(text.split()) or type(exc).__name__


def print_error(message: str) -> None:
    """``error: <message>`` on stderr."""
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {message}", err=True)
