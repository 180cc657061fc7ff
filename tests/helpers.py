"""Builders and waits shared by the tests: snapshots from events or ratings, HTTP and
condition waits, small interaction matrices."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa

from ray_app.events.json_dialect import format_json, json_kind_of, parse_json_batch, topic_for
from ray_app.events.line_dialect import format_line, parse_line_batch
from ray_app.events.model import Event
from ray_app.events.schema import DEAD_LETTER_SCHEMA, SNAPSHOT_SCHEMA
from ray_app.models.base import Interactions
from ray_app.registry.store import Registry
from ray_app.retraining.config import RetrainConfig
from ray_app.retraining.control import SwitchRefused
from ray_app.snapshots.protocol import BatchId
from ray_app.snapshots.store import write_batch
from ray_app.training.job import ModelSpec


def write_events_snapshot(
    root: Path,
    events: Sequence[Event],
    *,
    topic: str = "movielog",
    partition: int = 0,
    first: int = 0,
) -> int:
    """Commit ``events`` (line dialect, parsed as ingest would) as one snapshot batch starting
    at offset ``first``; returns the next free offset."""
    lines = [format_line(e).encode() for e in events]
    offsets = list(range(first, first + len(lines)))
    parsed = parse_line_batch(lines, topic=topic, partitions=partition, offsets=offsets)
    write_batch(
        root, BatchId(topic, partition, first, first + len(lines) - 1), parsed.good, parsed.dead
    )
    return first + len(lines)


def write_ratings_snapshot(
    root: Path, ratings: pd.DataFrame, *, first: int = 0, topic: str = "movielog"
) -> int:
    """Commit a MovieLens ratings frame (``user_id, item_id, rating, timestamp``) as one batch of
    ``rate`` rows starting at offset ``first``; returns the next free offset."""
    n = len(ratings)
    table = pa.table(
        {
            "kind": ["rate"] * n,
            "user_id": ratings["user_id"].astype(str).tolist(),
            "movie_id": ratings["item_id"].astype(str).tolist(),
            "ts": pa.array(pd.to_datetime(ratings["timestamp"], unit="s", utc=True)),
            "minute": pa.nulls(n, pa.int32()),
            "rating": ratings["rating"].astype("float32").tolist(),
            "status": pa.nulls(n, pa.int32()),
            "latency_ms": pa.nulls(n, pa.float64()),
            "items": pa.nulls(n, pa.list_(pa.string())),
            "server": pa.nulls(n, pa.string()),
            "topic": [topic] * n,
            "partition": pa.array(np.zeros(n, dtype=np.int32)),
            "offset": pa.array(np.arange(first, first + n, dtype=np.int64)),
        }
    )
    table = pa.table(
        [
            table[f.name] if f.name in table.column_names else pa.nulls(n, f.type)
            for f in SNAPSHOT_SCHEMA
        ],
        schema=SNAPSHOT_SCHEMA,
    )
    write_batch(
        root, BatchId(topic, 0, first, first + n - 1), table, DEAD_LETTER_SCHEMA.empty_table()
    )
    return first + n


def wait_until(
    predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            got = predicate()
            if got:
                return got
        except Exception as exc:  # the thing waited for may not be up yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")


def wait_http(url: str, timeout: float = 120.0, status: int = 200) -> httpx.Response:
    """GET ``url`` until it answers ``status``; returns that response."""

    def get() -> httpx.Response | None:
        r = httpx.get(url, timeout=10)
        return r if r.status_code == status else None

    result: httpx.Response = wait_until(get, timeout, 0.5, f"{status} from {url}")
    return result


def interactions(
    pairs: Iterable[tuple[str, str]], items: Sequence[str] | None = None
) -> Interactions:
    """Binary interactions from ``(user, item)`` pairs; ``items`` fixes the item universe."""
    frame = pd.DataFrame(list(pairs), columns=["user_id", "item_id"])
    return Interactions.from_frame(frame, weight_col=None, item_ids=items)


def write_json_events_snapshot(
    root: Path,
    events: Sequence[Event],
    *,
    prefix: str = "events",
    partition: int = 0,
    first: int = 0,
) -> int:
    """Like :func:`write_events_snapshot` in the JSON dialect (which keeps schema-v2 fields);
    ``events`` must all be of one JSON kind, published on ``<prefix>.<kind>``."""
    kinds = {json_kind_of(e) for e in events}
    if len(kinds) != 1:
        raise ValueError(f"need events of exactly one JSON kind, got {sorted(kinds)}")
    (kind,) = kinds
    topic = topic_for(prefix, kind)
    records = [format_json(e) for e in events]
    offsets = list(range(first, first + len(records)))
    parsed = parse_json_batch(
        records, kind=kind, topic=topic, partitions=partition, offsets=offsets
    )
    write_batch(
        root, BatchId(topic, partition, first, first + len(records) - 1), parsed.good, parsed.dead
    )
    return first + len(records)


class ListSink:
    """An event sink (``send``/``close``, as the simulator's sinks) that keeps lines in memory."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed = False

    def send(self, user_id: str, line: str) -> None:
        """Keep ``line``."""
        self.lines.append(line)

    def close(self) -> None:
        """Remember that the run closed its sink."""
        self.closed = True


def write_lines_snapshot(
    root: Path, lines: Sequence[str], *, topic: str = "movielog", partition: int = 0, first: int = 0
) -> int:
    """Commit line-dialect ``lines`` (e.g. a simulator's output) as one snapshot batch starting
    at offset ``first``, failing the test if any line is dead-lettered; returns the next offset."""
    offsets = list(range(first, first + len(lines)))
    parsed = parse_line_batch(
        [line.encode() for line in lines], topic=topic, partitions=partition, offsets=offsets
    )
    if parsed.dead.num_rows:
        raise AssertionError(f"dead letters: {parsed.dead.column('error').to_pylist()[:5]}")
    write_batch(
        root, BatchId(topic, partition, first, first + len(lines) - 1), parsed.good, parsed.dead
    )
    return first + len(lines)


def serve_replica(deployment: object, **kwargs: Any) -> Any:
    """What a Serve replica of ``deployment`` holds, built without Ray: the decorated class
    constructed with ``kwargs`` (call its ``reconfigure`` next, as Serve does)."""
    bound: Any = deployment  # mypy sees the class; at run time it is a serve.Deployment
    return bound.func_or_class(**kwargs)


class StubResponse:
    """What ``handle.method.remote()`` returns: awaitable, and cancellable like a
    ``DeploymentResponse`` (``cancelled`` records an explicit :meth:`cancel`)."""

    def __init__(self, call: Awaitable[Any]) -> None:
        self.task = asyncio.ensure_future(call)
        self.cancelled = False

    def __await__(self) -> Generator[Any, None, Any]:
        return self.task.__await__()

    def cancel(self) -> None:
        """Cancel the call (a real response is not cancelled by abandoning its awaiter)."""
        self.cancelled = True
        self.task.cancel()


class StubMethod:
    """``handle.<method>``: ``remote(*args)`` runs ``fn(*args)``; every response is kept."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.fn = fn
        self.responses: list[StubResponse] = []

    def remote(self, *args: Any) -> StubResponse:
        """Start the call, as a DeploymentHandle does."""
        self.responses.append(StubResponse(self.fn(*args)))
        return self.responses[-1]


class StubHandle:
    """A DeploymentHandle stand-in for unit tests of Serve deployments: each keyword names a
    method and the coroutine function (a real replica's method, or a fake) that answers it."""

    def __init__(self, **methods: Callable[..., Awaitable[Any]]) -> None:
        for name, fn in methods.items():
            setattr(self, name, StubMethod(fn))


class S3Server:
    """A running S3-compatible server (moto's ``moto_server``) with one bucket."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint = endpoint
        """``host:port`` of the server (plain HTTP)."""
        self.bucket = bucket

    def uri(self, prefix: str) -> str:
        """An ``s3://`` URI of ``prefix`` in the bucket that carries the endpoint and (dummy)
        credentials itself, so any process (a subprocess, a Ray worker or Serve replica) can
        open it without environment variables."""
        query = f"endpoint_override={self.endpoint}&scheme=http&region=us-east-1"
        return f"s3://test:test@{self.bucket}/{prefix.strip('/')}?{query}"


def start_s3_server(
    port: int, bucket: str = "ray-app-test", timeout: float = 30.0
) -> tuple[subprocess.Popen[bytes], S3Server]:
    """Start ``moto_server`` (from the dev extras) on ``port`` and create ``bucket``; the
    caller stops the returned process."""
    import pyarrow.fs as pafs

    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = S3Server(f"127.0.0.1:{port}", bucket)
    try:
        wait_until(
            lambda: httpx.get(f"http://{server.endpoint}/", timeout=2).status_code < 500,
            timeout,
            what=f"moto_server on port {port}",
        )
        fs, _ = pafs.FileSystem.from_uri(server.uri("x") + "&allow_bucket_creation=true")
        fs.create_dir(bucket)
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    return proc, server


class FakeService:
    """The admin API in memory: every ``variants()`` read lets 100 requests through, split by
    weight, of which each slot's ``fallback_rate`` fell back."""

    def __init__(
        self,
        version: str,
        *,
        model: str = "popularity",
        refuse: bool = False,
        canary_fallback: float = 0.0,
    ) -> None:
        self.slots: dict[str, dict[str, Any]] = {
            "A": {"name": "A", "model": model, "version": version, "weight": 1.0},
            "canary": {"name": "canary", "model": model, "version": version, "weight": 0.0},
        }
        for s in self.slots.values():
            s.update(requests=0, fallbacks=0)
        self.fallback_rate = {"A": 0.0, "canary": canary_fallback}
        self.refuse = refuse
        self.switches: list[tuple[str, str, str]] = []
        self.traffic = 100

    def variants(self) -> list[dict[str, Any]]:
        total = sum(s["weight"] for s in self.slots.values())
        for name, s in self.slots.items():
            n = round(self.traffic * s["weight"] / total)
            s["requests"] += n
            s["fallbacks"] += round(n * self.fallback_rate[name])
        return copy.deepcopy(list(self.slots.values()))

    def switch(self, variant: str, model: str, version: str) -> dict[str, Any]:
        if self.refuse:
            raise SwitchRefused("signature does not verify")
        self.switches.append((variant, model, version))
        self.slots[variant].update(model=model, version=version)
        return {"variant": variant, "version": version}

    def set_weights(self, weights: dict[str, float]) -> dict[str, Any]:
        for name, w in weights.items():
            self.slots[name]["weight"] = w
        return {"weights": weights}


def fast_retrain_config(snaps: Path, registry: Registry, **overrides: Any) -> RetrainConfig:
    """A popularity retrain over ``snaps`` into ``registry`` whose canary phase ends after 20
    requests polled every 10 ms: for cycles driven by :class:`FakeService`."""
    return RetrainConfig(
        snapshot_dir=snaps,
        registry=str(registry.uri),
        model=ModelSpec(name="popularity"),
        catalog_dataset=None,
        canary_min_requests=20,
        canary_poll_s=0.01,
        **overrides,
    )


def start_redis_server(port: int, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Start a throwaway ``redis-server`` (no persistence) on loopback ``port`` and wait until
    it answers PING; the caller stops the returned process."""
    import shutil

    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        wait_until(client.ping, timeout, 0.1, f"redis-server on port {port}")
        client.close()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    return proc


def landed_offsets(location: str) -> tuple[Counter[tuple[int, int]], int]:
    """Every (partition, offset) in the data files under ``location`` (snapshots and dead
    letters, durable or not: recovery must have removed unfinished ones), and how many of them
    are dead letters."""
    import pyarrow.parquet as pq

    from ray_app.snapshots.store import SnapshotStore

    store = SnapshotStore.at(location)
    seen: Counter[tuple[int, int]] = Counter()
    dead = 0
    for sub in ("events", "dead_letter"):
        for f in store.list_files(sub):
            t = pq.read_table(
                store.path(f.rel), filesystem=store.fs, columns=["partition", "offset"]
            )
            seen.update(zip(t["partition"].to_pylist(), t["offset"].to_pylist(), strict=True))
            dead += t.num_rows if sub == "dead_letter" else 0
    return seen, dead


def assert_exactly_once(seen: Counter[tuple[int, int]], produced: set[tuple[int, int]]) -> None:
    """Each produced (partition, offset) landed once: none twice, none lost, none invented."""
    dupes = {k: c for k, c in seen.items() if c > 1}
    assert not dupes, f"{len(dupes)} offsets written twice, e.g. {list(dupes)[:5]}"
    missing = produced - set(seen)
    assert not missing, f"{len(missing)} offsets lost, e.g. {sorted(missing)[:5]}"
    extra = set(seen) - produced
    assert not extra, f"{len(extra)} offsets never produced, e.g. {sorted(extra)[:5]}"


@contextlib.contextmanager
def asgi_client(app: Any, servable: Any) -> Iterator[Any]:
    """A Starlette TestClient on a ``@serve.ingress`` FastAPI app whose routes run on
    ``servable`` (an ingress object built without Ray): the real routing, middleware, exception
    handlers and OpenAPI in-process, with Serve's replica lookup pointed at ``servable``."""
    import types

    from fastapi.testclient import TestClient
    from ray import serve

    real = serve.get_replica_context
    fake: Any = lambda: types.SimpleNamespace(servable_object=servable)  # noqa: E731
    serve.get_replica_context = fake
    try:
        with TestClient(app, client=("203.0.113.7", 50000)) as client:
            yield client
    finally:
        serve.get_replica_context = real


class Sample(NamedTuple):
    """One request of :class:`SteadyLoad`: when it was due (seconds since the load started),
    its latency from that moment, its status and its JSON body (status 0: no HTTP answer, and
    the body is ``{"client_error": <httpx exception class>}``)."""

    due_s: float
    latency_s: float
    status: int
    body: dict[str, Any] | None


class SteadyLoad:
    """An open-loop client in a child process (its own GIL, away from the Ray driver's
    threads): ``GET paths[i % len(paths)]`` at ``rate`` requests a second (asyncio + httpx),
    each timed from its scheduled send, so a stall shows as latency rather than as fewer
    requests. Use as a context manager; :attr:`samples` is filled, sorted by ``due_s``, when it
    exits."""

    def __init__(
        self, base_url: str, rate: float, paths: Sequence[str], timeout_s: float = 10.0
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.t0 = 0.0
        self.timeout_s = timeout_s
        self.samples: list[Sample] = []
        self._stop = ctx.Event()
        self._out: Any = ctx.Queue()
        self._sent: Any = ctx.Value("d", -1.0)
        self._proc = ctx.Process(
            target=_steady_load_main,
            args=(base_url, rate, list(paths), timeout_s, self._stop, self._out, self._sent),
            daemon=True,
        )

    def __enter__(self) -> SteadyLoad:
        self._proc.start()
        # the child's start (CLOCK_MONOTONIC, the same clock here), once it has imported
        self.t0 = self._out.get(timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        rows = self._out.get(timeout=self.timeout_s + 60)
        self._proc.join(30)
        self.samples = sorted((Sample(*r) for r in rows), key=lambda s: s.due_s)

    def now(self) -> float:
        """Seconds since the load started (the clock of ``Sample.due_s``)."""
        return time.monotonic() - self.t0

    def wait_sent(self, due_s: float, timeout: float = 300.0) -> None:
        """Wait until the client has sent the request due at ``due_s`` (on a starved machine
        it lags its schedule; a phase that should hold N seconds of load waits for them)."""
        wait_until(lambda: self._sent.value >= due_s, timeout, 0.2, f"requests due at {due_s}")


def _steady_load_main(
    base_url: str,
    rate: float,
    paths: list[str],
    timeout_s: float,
    stop: Any,
    out: Any,
    sent: Any,
) -> None:
    t0 = time.monotonic()
    out.put(t0)
    rows: list[tuple[float, float, int, dict[str, Any] | None]] = []

    async def one(client: httpx.AsyncClient, i: int, due: float) -> None:
        try:
            r = await client.get(paths[i % len(paths)])
            ctype = r.headers.get("content-type", "")
            body = r.json() if ctype.startswith("application/json") else None
            status = r.status_code
        except (httpx.HTTPError, ValueError) as exc:
            body, status = {"client_error": type(exc).__name__}, 0
        rows.append((due - t0, time.monotonic() - due, status, body))

    async def run() -> None:
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as c:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            while not stop.is_set():
                due = t0 + i / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                task = asyncio.create_task(one(c, i, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent.value = due - t0
                i += 1
            await asyncio.gather(*tasks)

    asyncio.run(run())
    out.put(rows)


def serve_replica_pids(deployment: str, app: str = "recommender") -> list[int]:
    """PIDs of the live replicas of a Serve deployment, from the GCS actor table (works
    without the dashboard, which ``ray.util.state`` needs)."""
    from ray._private import state as ray_state

    actors: dict[str, dict[str, Any]] = ray_state.actors()
    return sorted(
        int(a["Pid"])
        for a in actors.values()
        if a["State"] == "ALIVE" and a["Name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#")
    )


def serve_replica_nodes(deployment: str, app: str = "recommender") -> list[str]:
    """Node ids (hex) of the live replicas of a Serve deployment, one per replica, sorted."""
    from ray._private import state as ray_state

    actors: dict[str, dict[str, Any]] = ray_state.actors()
    return sorted(
        str(a["Address"]["NodeID"])
        for a in actors.values()
        if a["State"] == "ALIVE" and a["Name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#")
    )


LOCAL_RAY: dict[str, Any] = {
    "address": "local",  # never join a cluster some other process left behind
    "num_cpus": 2,
    "include_dashboard": False,
    "log_to_driver": False,
}
"""How the tests start their one-node Ray (``ray_session`` in conftest.py)."""


@contextlib.contextmanager
def head_and_two_workers(
    head_args: dict[str, Any], worker_args: dict[str, Any]
) -> Iterator[tuple[Any, list[Any]]]:
    """A ``ray.cluster_utils.Cluster`` (a head and two worker nodes) in place of the session's
    one-node Ray, which is shut down for it and started again after it, so later tests find it
    as they expect; yields the cluster and its worker nodes."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    had_session = ray.is_initialized()
    if had_session:
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    workers = [cluster.add_node(**worker_args) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, workers
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        if had_session:
            ray.init(**LOCAL_RAY)
