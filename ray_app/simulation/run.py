"""Drive simulated users against a recommender and publish everything they do.

Two ways to ask for recommendations, one behaviour:

* :func:`simulate` takes any callable ``recommend(user_id) -> Answer`` (tests, offline
  experiments; no HTTP);
* :func:`simulate_http` requests ``GET {endpoint}/recommend/{user}?format=json`` from a live
  service with httpx, at most ``concurrency`` requests in flight, and reads each body into the
  service's own answer model (:class:`~ray_app.serving.answer.Answer`).

Every answer becomes a reco event built by :func:`ray_app.events.reco.served_reco_event`, as the
serving app builds its own, and every reaction watch/rate events; all are written in the line
dialect (see :mod:`ray_app.events.line_dialect`) and sent to an :class:`EventSink` — Kafka
topic ``movielog`` by default, keyed by user so each user's events keep their order. The line
dialect has no variant field: the reco line's ``<server>`` says ``<variant>@<model>:<version>``
(:func:`ray_app.events.reco.format_server`), which online evaluation reads back. When the service
sends its own reco events to Kafka, ``log_reco=False`` leaves them out here.

A run ends after its steps, ``max_requests`` or ``max_seconds``, or when its ``stop`` event is
set; :class:`BackgroundSimulation` runs one in a thread until stopped (the demo's live traffic).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ray_app.events.line_dialect import DEFAULT_TOPIC, format_line
from ray_app.events.model import RateEvent, WatchEvent
from ray_app.events.reco import UNKNOWN, served_reco_event
from ray_app.serving.answer import Answer
from ray_app.simulation.users import Population, UserBehaviourConfig, react

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

RecommendFn = Callable[[str], Answer]
"""A recommender for :func:`simulate`: user id → the answer the service would give."""
AsyncRecommendFn = Callable[[str], Awaitable[Answer]]
"""A recommender for :func:`simulate_async`, e.g. :func:`http_recommender`."""


class SimulationConfig(BaseModel):
    """One simulation run: who, how much, how fast, and where events go."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    endpoint: str = "http://127.0.0.1:8000"
    """Base URL of the serving app (only for :func:`simulate_http`)."""
    bootstrap_servers: str = ""
    """Kafka ``host:port`` list for the default sink; empty starts nothing (the CLI starts the
    embedded broker)."""
    topic: str = DEFAULT_TOPIC
    """Line-dialect topic every event goes to."""
    dataset: str = "ml-100k"
    """MovieLens variant the users are drawn from."""
    n_users: int | None = Field(default=200, ge=1)
    """Users drawn from the dataset; ``None`` uses all."""
    steps_per_user: int | None = Field(default=3, ge=1)
    """Recommendation requests per user (users are interleaved, step by step); ``None`` keeps
    going round the users until stopped or a bound below is reached."""
    max_requests: int | None = Field(default=10_000, ge=1)
    """Hard bound on requests in the run; ``None``: no bound."""
    max_seconds: float | None = Field(default=600.0, gt=0)
    """Hard bound on wall-clock run time; ``None``: no bound."""
    concurrency: int = Field(default=8, ge=1)
    """Requests in flight at once (HTTP only)."""
    rate_per_s: float | None = Field(default=None, gt=0)
    """Pace requests to about this many a second (``None``: as fast as answers come). A live
    service shares its machine with ingest and training, which an unpaced run would starve."""
    log_reco: bool = True
    """Write a reco line for every answer. Turn it off when the service sends its own reco
    events to Kafka (``kafka_bootstrap_servers`` in its args): each list would be counted twice
    by online evaluation otherwise."""
    request_timeout_s: float = Field(default=5.0, gt=0)
    """Per-request HTTP timeout; a timed-out request is counted as failed and skipped."""
    k: int = Field(default=10, ge=1, le=100)
    """Items requested per list (``?k=``)."""
    clock: Literal["wall", "virtual"] = "wall"
    """``wall``: lists are shown now; ``virtual``: request ``i`` is shown at
    ``start + i * interval_s`` (deterministic, for tests and back-fills)."""
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    """First virtual time (``clock='virtual'``)."""
    interval_s: float = Field(default=30.0, gt=0)
    """Virtual seconds between consecutive requests."""
    seed: int = 0
    """Seeds user sampling, request order and every behaviour draw."""
    behaviour: UserBehaviourConfig = UserBehaviourConfig()
    """How users react to lists."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {v!r} must start with http:// or https://")
        return v.rstrip("/")


class EventSink(Protocol):
    """Where simulated event lines go."""

    def send(self, user_id: str, line: str) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """Appends lines to a text file (offline runs; replay later with ``ray-app replay``)."""

    def __init__(self, path: str) -> None:
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def send(self, user_id: str, line: str) -> None:
        self.fh.write(line + "\n")

    def close(self) -> None:
        self.fh.close()


class KafkaSink:
    """Produces lines to one Kafka topic, keyed by user id (per-user order is kept)."""

    def __init__(self, bootstrap_servers: str, topic: str = DEFAULT_TOPIC, **client: Any) -> None:
        from kafka import KafkaProducer

        from ray_app.broker.settings import KafkaSettings

        kw = KafkaSettings(bootstrap_servers=bootstrap_servers).producer_kwargs()
        kw.update(client)
        self.topic = topic
        self.producer = KafkaProducer(linger_ms=20, **kw)

    def send(self, user_id: str, line: str) -> None:
        self.producer.send(self.topic, key=user_id.encode(), value=line.encode())

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


@dataclass
class SimulationStats:
    """What a run did; ``summary()`` is the line the CLI prints."""

    requests: int = 0
    failures: int = 0
    watches: int = 0
    watch_events: int = 0
    rates: int = 0
    per_variant: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> str:
        variants = ", ".join(f"{v}={n}" for v, n in sorted(self.per_variant.items())) or "-"
        return (
            f"{self.requests} requests ({self.failures} failed) in {self.seconds:.1f}s; "
            f"{self.watches} movies watched ({self.watch_events} watch events), "
            f"{self.rates} ratings; per variant: {variants}"
        )


def _schedule(population: Population, config: SimulationConfig) -> Iterator[tuple[int, str]]:
    """``(request index, user)``: every user once per step in a fresh random order, lazily (a
    run without ``steps_per_user`` never ends by itself)."""
    rng = np.random.default_rng(config.seed)
    users = population.user_ids
    index = 0
    step = 0
    while users and (config.steps_per_user is None or step < config.steps_per_user):
        for i in rng.permutation(len(users)):
            if config.max_requests is not None and index >= config.max_requests:
                return
            yield index, users[i]
            index += 1
        step += 1


class _Runner:
    """State shared by the sync and async drivers: clock, RNG, sink and counters."""

    def __init__(
        self,
        population: Population,
        config: SimulationConfig,
        sink: EventSink,
        stop: threading.Event | None = None,
    ) -> None:
        self.population = population
        # Private copies of the users' memory: a population can be reused for another run
        # (an A/A after an A/B) without the first run's watches leaking into the second.
        self.users = {u: replace(s, watched=set(s.watched)) for u, s in population.users.items()}
        self.config = config
        self.sink = sink
        self.rng = np.random.default_rng(config.seed + 1)
        self.stats = SimulationStats()
        self.stop = stop or threading.Event()
        self.started = time.monotonic()

    def shown_at(self, index: int) -> datetime:
        if self.config.clock == "virtual":
            return self.config.start + timedelta(seconds=index * self.config.interval_s)
        return datetime.now(UTC)

    def expired(self) -> bool:
        if self.stop.is_set():
            return True
        limit = self.config.max_seconds
        return limit is not None and time.monotonic() - self.started > limit

    def pace(self, index: int) -> float:
        """Seconds to wait before request ``index`` to keep to ``rate_per_s`` (0: go now)."""
        if self.config.rate_per_s is None:
            return 0.0
        return max(0.0, self.started + index / self.config.rate_per_s - time.monotonic())

    def record(self, user_id: str, answer: Answer, at: datetime, latency_ms: float) -> None:
        event = served_reco_event(
            user_id=user_id,
            items=answer.items,
            variant=answer.variant,
            model=answer.model,
            version=answer.model_version,
            latency_ms=latency_ms,
            request_id=answer.request_id,
            ts=at,
        )
        if self.config.log_reco:
            self.sink.send(user_id, format_line(event))
        self.stats.requests += 1
        self.stats.seconds = time.monotonic() - self.started
        self.stats.per_variant[answer.variant or UNKNOWN] += 1
        user = self.users[user_id]
        for ev in react(user, answer.items, at, self.rng, self.config.behaviour):
            self.sink.send(user_id, format_line(ev))
            if isinstance(ev, WatchEvent):
                self.stats.watch_events += 1
                self.stats.watches += ev.minute == 0
            elif isinstance(ev, RateEvent):
                self.stats.rates += 1

    def finish(self) -> SimulationStats:
        self.sink.close()
        self.stats.seconds = time.monotonic() - self.started
        log.info("simulation finished: %s", self.stats.summary())
        return self.stats


def simulate(
    population: Population,
    recommend: RecommendFn,
    config: SimulationConfig = SimulationConfig(),
    sink: EventSink | None = None,
) -> SimulationStats:
    """Run the simulation sequentially against a plain callable; returns the run's counters.

    ``sink`` defaults to a :class:`KafkaSink` on ``config.bootstrap_servers``. A callable that
    raises counts as a failed request (the user sees nothing), never stops the run.
    """
    runner = _Runner(population, config, sink or KafkaSink(config.bootstrap_servers, config.topic))
    for i, user_id in _schedule(population, config):
        time.sleep(runner.pace(i))
        if runner.expired():
            break
        at = runner.shown_at(i)
        t0 = time.perf_counter()
        try:
            answer = recommend(user_id)
        except Exception as exc:  # a broken recommender is data for the run, not a crash
            runner.stats.failures += 1
            log.debug("recommend(%s) failed: %s", user_id, exc)
            continue
        runner.record(user_id, answer, at, round((time.perf_counter() - t0) * 1000, 3))
    return runner.finish()


def http_recommender(client: httpx.AsyncClient, endpoint: str, k: int = 10) -> AsyncRecommendFn:
    """An async recommend function over ``GET {endpoint}/recommend/{user}?format=json``; a
    body that is not an :class:`~ray_app.serving.answer.Answer` raises (a failed request)."""

    async def recommend(user_id: str) -> Answer:
        resp = await client.get(
            f"{endpoint}/recommend/{user_id}", params={"format": "json", "k": k}
        )
        resp.raise_for_status()
        return Answer.model_validate(resp.json())

    return recommend


async def _drive(runner: _Runner, recommend: AsyncRecommendFn) -> SimulationStats:
    """Run ``runner``'s schedule against ``recommend``, ``concurrency`` requests at a time."""
    jobs = _schedule(runner.population, runner.config)

    async def worker() -> None:
        # No await between taking a job and using it: the workers share one iterator safely.
        for i, user_id in jobs:
            await asyncio.sleep(runner.pace(i))
            if runner.expired():
                return
            at = runner.shown_at(i)
            t0 = time.perf_counter()
            try:
                answer = await recommend(user_id)
            except Exception as exc:  # timeouts, 5xx, bad JSON: count and carry on
                runner.stats.failures += 1
                log.debug("request for user %s failed: %s", user_id, exc)
                continue
            runner.record(user_id, answer, at, round((time.perf_counter() - t0) * 1000, 3))

    try:
        await asyncio.gather(*(worker() for _ in range(runner.config.concurrency)))
    finally:
        runner.finish()
    return runner.stats


async def simulate_async(
    population: Population,
    recommend: AsyncRecommendFn,
    config: SimulationConfig = SimulationConfig(),
    sink: EventSink | None = None,
    *,
    stop: threading.Event | None = None,
) -> SimulationStats:
    """Like :func:`simulate` for an async recommend function, ``config.concurrency`` at a time;
    setting ``stop`` ends the run after the requests in flight."""
    sink = sink or KafkaSink(config.bootstrap_servers, config.topic)
    return await _drive(_Runner(population, config, sink, stop), recommend)


async def _drive_http(runner: _Runner) -> SimulationStats:
    import httpx

    config = runner.config
    limits = httpx.Limits(max_connections=config.concurrency)
    async with httpx.AsyncClient(timeout=config.request_timeout_s, limits=limits) as client:
        return await _drive(runner, http_recommender(client, config.endpoint, config.k))


def simulate_http(
    population: Population,
    config: SimulationConfig = SimulationConfig(),
    sink: EventSink | None = None,
    *,
    stop: threading.Event | None = None,
) -> SimulationStats:
    """Run the simulation against the live HTTP endpoint ``config.endpoint``; setting ``stop``
    (from another thread) ends it after the requests in flight."""
    sink = sink or KafkaSink(config.bootstrap_servers, config.topic)
    return asyncio.run(_drive_http(_Runner(population, config, sink, stop)))


class BackgroundSimulation:
    """:func:`simulate_http` in a thread of its own, until :meth:`stop` (or a bound in the
    config): live traffic while the caller does other work, e.g. a canary that needs requests.

    ``stats`` are the run's counters as they grow (read them from any thread).
    """

    def __init__(
        self,
        population: Population,
        config: SimulationConfig = SimulationConfig(),
        sink: EventSink | None = None,
    ) -> None:
        self._stop = threading.Event()
        sink = sink or KafkaSink(config.bootstrap_servers, config.topic)
        self._runner = _Runner(population, config, sink, self._stop)
        self._thread = threading.Thread(target=self._main, name="simulation", daemon=True)
        self.error: BaseException | None = None
        """What ended the run early, if anything did (the thread never raises it)."""

    def _main(self) -> None:
        try:
            asyncio.run(_drive_http(self._runner))
        except BaseException as exc:  # reported through ``error`` and stop()
            self.error = exc
            log.exception("simulation stopped by an error")

    @property
    def stats(self) -> SimulationStats:
        """The counters so far."""
        return self._runner.stats

    @property
    def running(self) -> bool:
        """Whether the run is still going."""
        return self._thread.is_alive()

    def start(self) -> Self:
        """Start sending requests; returns ``self``."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> SimulationStats:
        """End the run after the requests in flight, flush the sink and return the counters;
        raises the error that ended the run early, if one did."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self.error is not None:
            raise self.error
        return self._runner.stats
