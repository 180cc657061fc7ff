"""Simulated users in the background against a live HTTP endpoint, until stopped: what the demo
runs while it evaluates and retrains."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from helpers import ListSink, wait_until

from ray_app.simulation.run import BackgroundSimulation, SimulationConfig
from ray_app.simulation.users import UserBehaviourConfig, build_population

pytestmark = pytest.mark.integration


class _Answers(BaseHTTPRequestHandler):
    """Answers every ``/recommend/<user>`` with the same two movies, as the service would."""

    def do_GET(self) -> None:
        body = json.dumps(
            {"items": ["1", "2"], "variant": "A", "model": "ease", "model_version": "v1"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _ratings(users: int = 4) -> pd.DataFrame:
    rows = [(str(u), str(m), 5.0, 0) for u in range(users) for m in range(1, 11)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_runs_until_stopped_at_its_pace_without_reco_lines(endpoint: str) -> None:
    pop = build_population(_ratings(4), UserBehaviourConfig(lift=0.9, base_watch_prob=0.1))
    cfg = SimulationConfig(
        endpoint=endpoint,
        n_users=None,
        steps_per_user=None,  # round after round of the 4 users, until stopped
        max_requests=None,
        max_seconds=None,
        rate_per_s=40.0,
        concurrency=4,
        log_reco=False,
    )
    sink = ListSink()
    sim = BackgroundSimulation(pop, cfg, sink).start()
    wait_until(lambda: sim.stats.requests >= 30, timeout=30, what="30 answers")
    assert sim.running
    stats = sim.stop()
    assert not sim.running and sink.closed
    n = stats.requests
    assert n >= 30 and stats.failures == 0
    # Paced: 40 requests a second at most (plus the ones in flight when the run started).
    assert n <= 40 * stats.seconds + cfg.concurrency
    time.sleep(0.3)
    assert sim.stats.requests == n  # nothing after stop()
    # The service logs the reco events itself: the users write only their reactions.
    assert not any("recommendation request" in line for line in sink.lines)
    assert any("GET /data/m/" in line for line in sink.lines)
    assert stats.per_variant == {"A": n}


def test_a_bounded_background_run_ends_by_itself(endpoint: str) -> None:
    pop = build_population(_ratings(3))
    cfg = SimulationConfig(endpoint=endpoint, n_users=None, steps_per_user=2, concurrency=2)
    sink = ListSink()
    sim = BackgroundSimulation(pop, cfg, sink).start()
    wait_until(lambda: not sim.running, timeout=30, what="the run to end")
    stats = sim.stop()
    assert stats.requests == 6
    assert sum("recommendation request" in line for line in sink.lines) == 6
