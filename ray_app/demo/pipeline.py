"""The demo's pipeline: the whole loop, once (``--once``) or on a schedule until Ctrl-C.

broker → MovieLens → ingest running on Ray for the whole demo (two consumer groups: the line
dialect and the JSON dialect, into one snapshot directory) → replay of the visible history →
train → the Serve graph of ``serve_config.yaml``, sending reco events to Kafka → simulated users
calling it over HTTP, their activity produced to Kafka → online evaluation per variant and
model version → experiment report → a retraining cycle against the live service while traffic
flows (gate → canary → promote) → a closing summary.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
from rich.console import Console

from ray_app.broker.embedded import kafka_endpoint
from ray_app.broker.settings import KafkaSettings
from ray_app.demo.background import Background
from ray_app.demo.board import Board
from ray_app.demo.config import DemoConfig
from ray_app.demo.shipped import (
    ingest_configs,
    retrain_config,
    serve_args,
    train_config,
)
from ray_app.demo.stages import (
    DEMO_STATE,
    DemoData,
    NotingControl,
    create_topics,
    delete_service,
    evaluate,
    experiment_report,
    load_data,
    measure_freshness,
    metrics_url,
    replay_history,
    start_service,
    start_users,
    topic_has_events,
)
from ray_app.demo.summary import DemoSummary, print_summary
from ray_app.errors import UserError
from ray_app.evaluation.online import OnlineEvalResult
from ray_app.retraining.config import RetrainConfig
from ray_app.retraining.control import HttpServiceControl, ServiceControl
from ray_app.retraining.cycle import Candidate, run_cycle, train_candidate
from ray_app.runtime import cluster_address, init_ray
from ray_app.serving.security import token_hash
from ray_app.simulation.users import UserBehaviourConfig
from ray_app.training.job import run_training

STAGES = (
    "broker",
    "data",
    "ray",
    "ingest",
    "replay",
    "train",
    "serve",
    "users",
    "online eval",
    "report",
    "retrain",
    "close",
)
BATCH_DELAY_S = 2.0
"""Longest a record waits in a consumer's buffer, so a quiet topic is durable within seconds."""
FRESH_OUTPUTS = ("snapshots", "registry", "online", "report", "metrics", "summary.json")
"""What a run on the embedded broker starts without: offsets restart at 0 on a new broker, and
versions trained on another run's data would be served first."""


class DemoRun:
    """One demo run: the stages as methods, the resources on ``stack`` (released in reverse)."""

    def __init__(self, opts: DemoConfig, board: Board, stack: ExitStack) -> None:
        self.opts = opts
        self.board = board
        self.stack = stack
        self.snapshots = str(opts.location("snapshots"))
        self.registry = str(opts.location("registry"))
        self.token = secrets.token_urlsafe(24)
        self.behaviour = UserBehaviourConfig(max_delay_s=opts.window_s)
        self.summary = DemoSummary(window_s=opts.window_s)
        self.started = time.monotonic()
        self.local_ray = cluster_address(opts.ray_address) is None
        self.settings = KafkaSettings()
        self.data: DemoData | None = None
        self.background = Background(opts.timeout_s)
        self.line_topic = "movielog"
        self.base = f"http://127.0.0.1:{opts.port}"
        self.control: ServiceControl | None = None
        self.weights: dict[str, float] = {}
        self.online: OnlineEvalResult | None = None
        self.retrain_cfg = retrain_config(
            opts.config_dir, opts.home(), self.snapshots, self.registry
        )

    # ---- the cycle ------------------------------------------------------------------------
    def first_cycle(self) -> None:
        """Every stage once, from an empty broker to a retrained, promoted model."""
        self.start_broker()
        self.load_data()
        self.start_ray()
        self.start_ingest()
        self.replay()
        self.train()
        self.serve()
        self.simulate()
        self.soft("online eval", self.evaluate)
        self.soft("report", self.report)
        self.soft("retrain", self.retrain)

    def repeat(self) -> None:
        """Evaluate and report every ``eval_every_s``, retrain every ``retrain_every_s``, until
        Ctrl-C or SIGTERM (both arrive here as KeyboardInterrupt)."""
        self.board.print(
            f"serving at {self.base}/recommend/<user_id> while simulated users keep coming; "
            f"evaluating every {self.opts.eval_every_s:g}s, retraining every "
            f"{self.opts.retrain_every_s:g}s; Ctrl-C stops"
        )
        next_eval = time.monotonic() + self.opts.eval_every_s
        next_retrain = time.monotonic() + self.opts.retrain_every_s
        while True:
            if time.monotonic() >= next_retrain:
                self.soft("retrain", self.retrain)
                next_retrain = time.monotonic() + self.opts.retrain_every_s
            if time.monotonic() >= next_eval:
                self.soft("online eval", self.evaluate)
                self.soft("report", self.report)
                next_eval = time.monotonic() + self.opts.eval_every_s
            time.sleep(1.0)

    def soft(self, name: str, step: Callable[[], object]) -> None:
        """Run a stage whose failure the summary reports instead of ending the demo (a bug's
        traceback is printed first)."""
        try:
            step()
        except Exception as exc:
            if not isinstance(exc, UserError | httpx.HTTPError):
                self.board.console.print_exception()
            self.summary.errors.append(f"{name}: {' '.join(str(exc).split())}")

    # ---- stages ---------------------------------------------------------------------------
    def start_broker(self) -> None:
        with self.board.stage("broker") as note:
            servers = self.stack.enter_context(kafka_endpoint(self.opts.bootstrap_servers))
            self.settings = KafkaSettings(bootstrap_servers=servers)
            how = "given" if self.opts.bootstrap_servers else "embedded Tansu"
            note(f"Kafka ({how}) at {servers}")

    def load_data(self) -> None:
        with self.board.stage("data") as note:
            self.data = data = load_data(self.opts.users, self.behaviour)
            ml, pop = data.movielens, data.population
            note(
                f"MovieLens-100K ({ml.source}): {len(pop.train) + len(pop.test):,} ratings → "
                f"{len(pop.train):,} visible history + {len(pop.test):,} held out as the hidden "
                f"taste of {len(pop.users):,} simulated users"
            )

    def start_ray(self) -> None:
        import ray

        with self.board.stage("ray") as note:
            # Logical CPUs, not cores: ingest actors, Serve replicas and training tasks must all
            # fit at once on a laptop; the OS shares the cores between them.
            cpus = max(4, os.cpu_count() or 1) if self.local_ray else None
            dashboard = init_ray(self.opts.ray_address, num_cpus=cpus)
            self.stack.callback(ray.shutdown)
            self.summary.dashboard_url = dashboard
            self.summary.metrics_url = metrics_url()
            where = "local Ray" if self.local_ray else "Ray cluster"
            note(f"{where}: dashboard {dashboard or '(off)'}, metrics {self.summary.metrics_url}")

    def start_ingest(self) -> None:
        with self.board.stage("ingest") as note:
            line, json = ingest_configs(self.opts.config_dir, self.snapshots, BATCH_DELAY_S)
            self.line_topic = line.topics[0]
            create_topics(self.settings, line, json)
            self.stack.callback(self.background.stop)
            self.background.start_ingest(self.settings, line, json)
            self.background.start_state(self.settings, self.line_topic, DEMO_STATE)
            self.board.watch("ingest", self.background.ingest_figures)
            note(
                f"consumer actors on Ray into {self.snapshots}: {line.group_id} ← "
                f"{', '.join(line.topics)}; {json.group_id} ← {', '.join(json.topics)}"
            )

    def replay(self) -> None:
        assert self.data is not None
        with self.board.stage("replay") as note:
            fresh = not self.opts.bootstrap_servers
            if not fresh and topic_has_events(self.settings, self.line_topic):
                note(f"{self.line_topic} already holds the history of an earlier run; ingesting it")
                took = self.background.wait_quiet("line")
                note(f"{self.line_topic} already held the history; ingest caught up in {took:.1f}s")
                return
            history = self.data.population.train

            def progress(done: int, total: int) -> None:
                note(f"{done:,}/{total:,} events → {self.line_topic}")

            st = replay_history(self.settings, self.line_topic, history, progress)
            self.background.replayed += st.events
            sent = (
                f"{st.events:,} line-dialect events ({st.watch:,} watch, {st.rate:,} rate) of "
                f"{st.users:,} users in {st.seconds:.1f}s "
                f"({st.events / max(st.seconds, 1e-9):,.0f}/s)"
            )
            note(f"{sent}; waiting for ingest")
            took = self.background.drain(note, sent)
            note(f"{sent}; all durable in snapshots {took:.1f}s later")

    def train(self) -> None:
        with self.board.stage("train") as note:
            note("fitting and evaluating configs/train.yaml's models on Ray")
            cfg = train_config(
                self.opts.config_dir, self.opts.home(), self.snapshots, self.registry
            )
            result = run_training(cfg)
            scores = ", ".join(
                f"{name} ndcg@10 {m.get('ndcg@10', float('nan')):.3f}"
                for name, m in result.metrics.items()
            )
            note(
                f"{len(result.versions)} versions registered from {result.interactions:,} "
                f"interactions ({result.users:,} users, {result.items:,} items, "
                f"{result.snapshot_files} snapshot files): {scores}"
            )

    def serve(self) -> None:
        with self.board.stage("serve") as note:
            args = serve_args(
                self.opts.config_dir,
                self.registry,
                self.settings.bootstrap_servers,
                token_hash(self.token),
            ).model_copy(update={"state": DEMO_STATE})  # fresh history from the consumer
            self.weights = {v.name: v.weight for v in args.variants if v.weight > 0}
            note(f"deploying serve_config.yaml's graph on {self.base}")
            health = start_service(args, self.opts.port, self.opts.timeout_s, self.token)
            if not self.local_ray:
                self.stack.callback(delete_service)
            self.control = HttpServiceControl(self.base, self.token)
            self.background.health_url = f"{self.base}/admin/status"
            self.background.admin_headers = {"Authorization": f"Bearer {self.token}"}
            slots = ", ".join(
                f"{v['name']}={v['model']}:{v['version']} ({float(v['weight']):g})"
                for v in health["variants"]
            )
            self.summary.serve_url = f"{self.base}/recommend/<user_id>"
            note(f"{self.base}: {slots}; reco events → Kafka {args.reco_topic}")
            self.board.print(
                f"admin API of this run: export RAY_APP_ADMIN_TOKEN={self.token}  "
                f'(then e.g. curl -H "Authorization: Bearer $RAY_APP_ADMIN_TOKEN" '
                f"{self.base}/admin/variants)"
            )

    def simulate(self) -> None:
        assert self.data is not None
        with self.board.stage("users") as note:
            bg = self.background
            if bg.users is None:
                bg.users = start_users(
                    self.data.population,
                    self.base,
                    self.settings.bootstrap_servers,
                    self.line_topic,
                    self.behaviour,
                    rate_per_s=self.opts.sim_rate,
                    concurrency=self.opts.sim_concurrency,
                )
                self.board.watch("users", bg.user_figures)
            users = bg.users
            target = users.stats.requests + self.opts.sim_requests
            limit = time.monotonic() + self.opts.sim_requests / self.opts.sim_rate * 3 + 60
            while users.stats.requests < target:
                if users.error is not None:
                    raise UserError(f"the simulated users stopped: {users.error}")
                if not users.running or time.monotonic() > limit:
                    raise UserError(
                        f"simulated users got {users.stats.requests} answers from {self.base} "
                        f"({users.stats.failures} requests failed): see `serve status` and the "
                        "Ray dashboard's Serve page"
                    )
                note(f"{users.stats.requests:,}/{target:,} requests")
                time.sleep(0.5)
            if self.summary.freshness_s is None:
                fresh = measure_freshness(self.base, self.settings, self.line_topic)
                self.summary.freshness_s = fresh
            note(f"{users.stats.summary()}; still calling {self.base}")

    def evaluate(self) -> None:
        with self.board.stage("online eval") as note:
            self.background.drain(note, "waiting for ingest")
            self.online = res = evaluate(
                self.snapshots, self.opts.window_s, self.opts.location("online")
            )
            rows: list[dict[str, Any]] = [
                {str(k): v for k, v in r.items()} for r in res.conversion.to_dict("records")
            ]
            parts = [
                f"{r['variant']} {r['model']}:{r['version']} "
                f"{int(r['conversions'])}/{int(r['requests'])} = {float(r['conversion_rate']):.1%}"
                for r in rows
            ]
            joined = sum(int(r["conversions"]) for r in rows)
            shown = sum(int(r["requests"]) for r in rows)
            self.summary.conversion = rows
            self.summary.checks.reco_events_joined = joined
            self.summary.online_metrics = str(res.metrics_path)
            note(
                f"{joined:,} of {shown:,} mature lists joined to later watches: "
                f"{'; '.join(parts) or 'none yet'}"
            )

    def report(self) -> None:
        if self.online is None:
            raise UserError("no online evaluation to report on")
        with self.board.stage("report") as note:
            rep, html = experiment_report(
                self.online,
                self.weights,
                self.retrain_cfg.control_variant,
                self.opts.window_s,
                self.opts.location("report"),
            )
            self.summary.checks.report_html = str(html)
            self.summary.report_decision = str(rep["decision"])
            note(f"{html} — {rep['decision']}")

    def retrain(self) -> None:
        if self.control is None:
            raise UserError("the service is not running")
        cfg = self.retrain_cfg
        with self.board.stage("retrain") as note:

            def train(config: RetrainConfig) -> Candidate:
                note(f"training a candidate {config.model.name} on Ray")
                return train_candidate(config)

            result = run_cycle(cfg, NotingControl(self.control, note, cfg), train=train)
            gate = next((s for s in result.steps if s["step"].startswith("gate")), {})
            self.summary.retrains.append(
                {
                    "outcome": result.outcome,
                    "model": result.model,
                    "version": result.version,
                    "reason": result.reason,
                    "gate": {k: gate.get(k) for k in ("metric", "candidate", "serving")},
                }
            )
            if result.outcome == "promoted":
                self.summary.checks.promoted_version = result.version
            scores = ""
            if gate.get("candidate") is not None:
                serving = gate.get("serving")
                scores = f" ({gate['metric']} {gate['candidate']:.4f} vs serving " + (
                    f"{serving:.4f})" if serving is not None else "none)"
                )
            note(f"{result.outcome} {result.model} {result.version or ''}{scores}: {result.reason}")

    def finish(self) -> DemoSummary:
        """Stop the users, make everything durable, evaluate and report one last time."""
        bg = self.background
        with self.board.stage("close") as note:
            self.board.unwatch("users")
            self.soft("users", self._stop_users)
            if self.control is not None:
                self.soft("serve", self._record_variants)
            ingesting = bool(bg.groups)
            if ingesting:
                note("making the last events durable")
                self.soft("ingest", lambda: bg.drain(note, "stopping ingest"))
                self.board.unwatch("ingest")
                self.summary.record_ingest(bg.stop_ingest())
            note("final online evaluation and report")
        if ingesting:
            self.soft("online eval", self.evaluate)
            if self.online is not None:
                self.soft("report", self.report)
        self.summary.seconds = time.monotonic() - self.started
        return self.summary

    def interim(self) -> DemoSummary:
        """The summary so far, with the users and ingest still running."""
        if self.background.users is not None:
            self.summary.record_users(self.background.users.stats)
        self.summary.record_ingest(self.background.ingest_stats())
        if self.control is not None:
            self.soft("serve", self._record_variants)
        self.summary.seconds = time.monotonic() - self.started
        return self.summary

    def _stop_users(self) -> None:
        stats = self.background.stop_users()
        if stats is not None:
            self.summary.record_users(stats)

    def _record_variants(self) -> None:
        assert self.control is not None
        self.summary.variants = self.control.variants()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the demo as Ctrl-C does (cleanly, with the summary)."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fresh_start(opts: DemoConfig) -> None:
    for name in FRESH_OUTPUTS:
        path = opts.location(name)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_demo(opts: DemoConfig, console: Console) -> int:
    """Run the demo; the process exit code (with ``once``: 0 only if the loop closed)."""
    if not opts.bootstrap_servers:
        _fresh_start(opts)
    interrupted = False
    with _sigterm_as_interrupt(), ExitStack() as stack:
        board = stack.enter_context(Board(console, STAGES))
        run = DemoRun(opts, board, stack)
        try:
            run.first_cycle()
            if not opts.once:
                print_summary(run.interim(), console)
                run.repeat()
        except KeyboardInterrupt:
            interrupted = True
            board.print("stopping: making what was produced durable, then the summary")
        summary = run.finish()
    summary.write(opts.location("summary.json"))
    print_summary(summary, console)
    if opts.once:
        return 0 if not summary.failures() and not interrupted else 1
    return 0
