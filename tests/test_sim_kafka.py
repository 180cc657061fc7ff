"""Integration: the simulator over real HTTP (a stdlib server) into the real embedded broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from kafka import KafkaConsumer

from ray_app.broker.embedded import ensure_topics
from ray_app.events.line_dialect import parse_line_batch
from ray_app.simulation.run import KafkaSink, SimulationConfig, simulate_http
from ray_app.simulation.users import build_population

pytestmark = pytest.mark.integration


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {
                "items": [str(i) for i in range(10)],
                "model": "popularity",
                "model_version": "1",
                "variant": "A",
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_simulation_lands_in_kafka(broker: str, service: str) -> None:
    rng = np.random.default_rng(0)
    ratings = pd.DataFrame(
        [(str(u), str(i), float(rng.integers(3, 6)), 0) for u in range(10) for i in range(10)],
        columns=["user_id", "item_id", "rating", "timestamp"],
    )
    topic = "sim-movielog"
    ensure_topics(broker, {topic: 1})
    cfg = SimulationConfig(
        endpoint=service, n_users=None, steps_per_user=2, concurrency=4, topic=topic
    )
    stats = simulate_http(build_population(ratings), cfg, KafkaSink(broker, topic))
    assert stats.requests == 20 and stats.failures == 0

    consumer = KafkaConsumer(
        topic, bootstrap_servers=broker, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    values = [m.value for m in consumer]
    consumer.close()
    parsed = parse_line_batch(values, topic=topic, partitions=0, offsets=list(range(len(values))))
    assert parsed.dead.num_rows == 0
    kinds = parsed.good.column("kind").to_pylist()
    assert kinds.count("reco") == 20 and kinds.count("watch") == stats.watch_events
    assert set(parsed.good.column("server").drop_null().to_pylist()) == {"A@popularity:1"}
