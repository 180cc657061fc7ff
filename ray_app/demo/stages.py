"""The demo's steps, each a call into a stage's public API with the demo's settings.

:mod:`ray_app.demo.pipeline` runs them in order; every function here returns the figures it
produced, and none prints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from kafka import KafkaConsumer, TopicPartition

from ray_app.broker.embedded import create_topics as broker_topics
from ray_app.broker.settings import KafkaSettings
from ray_app.data.movielens import MovieLens, load
from ray_app.errors import UserError
from ray_app.evaluation.online import OnlineEvalResult, run_online_eval
from ray_app.experiments.report import ExperimentConfig, build_report, write_report
from ray_app.ingest.config import IngestConfig
from ray_app.replay.events import ReplayConfig, ReplayStats, build_lines, produce
from ray_app.retraining.config import RetrainConfig
from ray_app.retraining.control import ServiceControl
from ray_app.serving.config import ServeArgs
from ray_app.simulation.run import BackgroundSimulation, SimulationConfig
from ray_app.simulation.users import Population, UserBehaviourConfig, build_population
from ray_app.state.config import StateConfig

DATASET = "ml-100k"
DEMO_STATE = StateConfig(actor_name="ray_app_demo_state", detached=False)
"""The demo's state store: an embedded actor that ends with the demo's Ray."""
FRESHNESS_PROBE_USER = "1"
"""A MovieLens user the trained models know, whose list the freshness probe changes."""
LINE_PARTITIONS = 2
"""Partitions of the line-dialect topic (as ``ray-app replay`` creates it)."""


@dataclass(frozen=True)
class DemoData:
    """MovieLens and the simulated users drawn from it."""

    movielens: MovieLens
    population: Population
    """``train``: the visible history the demo replays; ``users``: hidden taste from the rest."""


def load_data(users: int | None, behaviour: UserBehaviourConfig) -> DemoData:
    """MovieLens-100K (the first ``users`` users by id, as ``ray-app replay --users`` picks
    them) split into the visible history and every user's held-out taste."""
    ml = load(DATASET)
    ratings = ml.ratings
    if users is not None:
        chosen = sorted(pd.unique(ratings["user_id"]), key=lambda u: (len(str(u)), str(u)))
        ratings = ratings[ratings["user_id"].isin(chosen[:users])]
    return DemoData(ml, build_population(ratings, behaviour, n_users=None))


def create_topics(settings: KafkaSettings, line: IngestConfig, json: IngestConfig) -> None:
    """Create the demo's topics that do not exist yet (consumers then join at once)."""
    topics = {t: LINE_PARTITIONS for t in line.topics} | {t: 1 for t in json.topics}
    broker_topics(settings, topics)


def topic_has_events(settings: KafkaSettings, topic: str) -> bool:
    """Whether ``topic`` already holds records (an external broker the demo ran against
    before: its history is there, and replaying it again would count every rating twice)."""
    consumer = KafkaConsumer(**settings.client_kwargs())
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return any(end > 0 for end in ends.values())
    finally:
        consumer.close()


def replay_history(
    settings: KafkaSettings,
    topic: str,
    history: pd.DataFrame,
    progress: Callable[[int, int], None],
) -> ReplayStats:
    """Produce the visible ``history`` (ratings) as time-ordered line-dialect events, as
    ``ray-app replay`` does for a whole dataset."""
    config = ReplayConfig(topic=topic, dataset=DATASET, partitions=LINE_PARTITIONS)
    events = build_lines(history, config)
    total, done = len(events), 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    return produce(events, settings.producer_kwargs(), config, progress=advance)


def wait_http(
    url: str,
    timeout_s: float,
    ready: Callable[[httpx.Response], bool],
    headers: dict[str, str] | None = None,
) -> Any:
    """GET ``url`` until an answer is 200 and ``ready``; its JSON body. UserError on timeout."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=10, headers=headers)
            if r.status_code == 200 and ready(r):
                return r.json()
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise UserError(f"{url} was not ready within {timeout_s:g}s ({last}); see `serve status`")


def _all_slots_loaded(r: httpx.Response) -> bool:
    variants = r.json().get("variants") or []
    return bool(variants) and all(v.get("version") for v in variants)


def start_service(args: ServeArgs, port: int, timeout_s: float, token: str) -> dict[str, Any]:
    """Deploy the Serve app on the running Ray at ``127.0.0.1:port``; its ``/admin/status``
    (read with the admin ``token``) once every slot has loaded a version."""
    # Imported here: Serve reads its mode variables when ray.serve is first imported, and
    # init_ray sets them.
    from ray_app.serving.run import start_serving

    if not logging.getLogger().isEnabledFor(logging.INFO):
        # Serve logs each deployment step at INFO on the driver; the board shows the stage.
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    start_serving(args, "127.0.0.1", port)
    health: dict[str, Any] = wait_http(
        f"http://127.0.0.1:{port}/admin/status",
        timeout_s,
        _all_slots_loaded,
        {"Authorization": f"Bearer {token}"},
    )
    return health


def delete_service() -> None:
    """Delete the demo's app from a cluster's Serve (a local Ray goes down with it whole)."""
    from ray import serve

    from ray_app.demo.shipped import APP_NAME

    serve.delete(APP_NAME)


def start_users(
    population: Population,
    endpoint: str,
    bootstrap_servers: str,
    topic: str,
    behaviour: UserBehaviourConfig,
    *,
    rate_per_s: float,
    concurrency: int,
) -> BackgroundSimulation:
    """Simulated users calling ``endpoint`` until stopped, their activity produced to ``topic``.
    The service sends its own reco events, so the users do not write reco lines."""
    config = SimulationConfig(
        endpoint=endpoint,
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        dataset=DATASET,
        n_users=None,
        steps_per_user=None,
        max_requests=None,
        max_seconds=None,
        concurrency=concurrency,
        rate_per_s=rate_per_s,
        log_reco=False,
        behaviour=behaviour,
    )
    return BackgroundSimulation(population, config).start()


def evaluate(snapshots: str, window_s: float, out: Path) -> OnlineEvalResult:
    """Online evaluation: reco events joined to later watches, per variant and version."""
    return run_online_eval(snapshots, timedelta(seconds=window_s), out)


def experiment_report(
    online: OnlineEvalResult,
    weights: dict[str, float],
    control: str,
    window_s: float,
    out: Path,
) -> tuple[dict[str, Any], Path]:
    """The A/B report of the configured slots (``weights``; a canary's traffic is the
    retraining's, not the experiment's) from online evaluation's attribution; the report and
    its HTML path."""
    attributed = pd.read_parquet(online.attribution_path)
    attributed = attributed[attributed["variant"].isin(list(weights))]
    config = ExperimentConfig(control=control, weights=weights, window_s=window_s)
    report = build_report(attributed, config)
    _, html = write_report(report, out)
    return report, html


def metrics_url() -> str:
    """Ray's Prometheus endpoint of the head node (Serve's ``ray_app_*`` series are there)."""
    import ray

    for node in ray.nodes():
        if node.get("Alive") and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return ""


class NotingControl:
    """The service's admin API for a retraining cycle, noting each call on the console (which
    slot switches, and the canary's traffic while it is judged)."""

    def __init__(
        self, inner: ServiceControl, note: Callable[[str], None], config: RetrainConfig
    ) -> None:
        self.inner = inner
        self.note = note
        self.config = config
        self.canary_start: int | None = None

    def variants(self) -> list[dict[str, Any]]:
        """The slots; notes the canary's requests since it got traffic."""
        variants = self.inner.variants()
        canary = next((v for v in variants if v["name"] == self.config.canary_variant), None)
        if canary is not None and float(canary.get("weight", 0)) > 0:
            requests = int(canary.get("requests", 0))
            if self.canary_start is None:
                self.canary_start = requests
            self.note(
                f"canary {canary.get('model')} {canary.get('version')}: "
                f"{requests - self.canary_start}/{self.config.canary_min_requests} requests"
            )
        return variants

    def switch(self, variant: str, model: str, version: str) -> dict[str, Any]:
        """Point a slot at a version."""
        self.note(f"switching slot {variant} to {model} {version}")
        return self.inner.switch(variant, model, version)

    def set_weights(self, weights: dict[str, float]) -> dict[str, Any]:
        """Replace the A/B weights."""
        self.canary_start = None
        return self.inner.set_weights(weights)


def measure_freshness(
    base: str, settings: KafkaSettings, topic: str, timeout_s: float = 60.0
) -> float | None:
    """Seconds from producing a watch of the probe user's top movie (line dialect, to
    ``topic``) to the first answer without it; None if it did not leave within ``timeout_s``."""
    from kafka import KafkaProducer

    from ray_app.events.line_dialect import format_line
    from ray_app.events.model import WatchEvent

    user = FRESHNESS_PROBE_USER
    top = httpx.get(f"{base}/recommend/{user}", timeout=10).text.split(",")[0]
    producer = KafkaProducer(**settings.client_kwargs())
    try:
        started = time.monotonic()
        event = WatchEvent(pd.Timestamp.now(tz="UTC").to_pydatetime(), user, top, 0)
        producer.send(topic, format_line(event).encode())
        producer.flush()
        # 5 polls a second for 5 s, then 1: inside the per-user rate limit (100 a minute).
        while (waited := time.monotonic() - started) < timeout_s:
            r = httpx.get(f"{base}/recommend/{user}", timeout=10)
            if r.status_code == 200 and top not in r.text.split(","):
                return time.monotonic() - started
            time.sleep(0.2 if waited < 5 else 1.0)
        return None
    finally:
        producer.close()
