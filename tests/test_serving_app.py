"""The Serve app over real HTTP on a real local Ray: A/B, fallback, admin, limits, switches.

One app for the whole module (starting Serve costs seconds on 2 cores); tests that change
weights or the router's settings put them back.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import interactions, wait_until

from ray_app.broker.embedded import free_port
from ray_app.events.json_dialect import parse_json
from ray_app.events.model import RecoEvent, ValidationRules
from ray_app.events.reco import format_server
from ray_app.models.base import Interactions
from ray_app.models.itemknn import ItemKNN
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry, write_item_metadata
from ray_app.serving.answer import Answer
from ray_app.serving.config import ApiKey, ServeArgs, VariantSpec
from ray_app.serving.router import assign
from ray_app.serving.security import token_hash

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-secret"}
READER = {"Authorization": "Bearer reader-secret"}
RECO_TOPIC = "test-serving-reco"
GENRES = ["Action", "Drama", "Comedy", "Kids", "Horror"]


def _interactions(seed: int) -> Interactions:
    rng = np.random.default_rng(seed)
    return interactions(
        (f"u{u}", f"m{i}") for u in range(200) for i in rng.choice(80, size=12, replace=False)
    )


@pytest.fixture(scope="module")
def app(
    ray_session: None, broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from ray import serve

    from ray_app.broker.embedded import ensure_topics
    from ray_app.serving.run import start_serving

    ensure_topics(broker, {RECO_TOPIC: 1})

    root = tmp_path_factory.mktemp("serving") / "registry"
    reg = Registry(root)
    v1 = reg.register(ItemKNN().fit(_interactions(1))).version
    v2 = reg.register(ItemKNN().fit(_interactions(2))).version
    reg.register(Popularity().fit(_interactions(1)))
    w1 = reg.register(Popularity().fit(_interactions(1)), name="watched").version
    # Signed and loadable, but its scores are NaN: every call for a known user raises.
    broken = Popularity().fit(_interactions(1))
    assert broken.item_scores_ is not None
    broken.item_scores_[:] = np.nan
    reg.register(broken, name="broken")
    write_item_metadata(reg, {f"m{i}": [GENRES[i % 5], GENRES[(i // 5) % 5]] for i in range(80)})
    args = ServeArgs(
        registry=str(root),
        variants=[
            VariantSpec(name="A", model="itemknn", version=v1, weight=0.7),
            VariantSpec(name="B", model="popularity", weight=0.3),
            VariantSpec(name="F", model="broken", weight=0.0),
            VariantSpec(name="W", model="watched", weight=0.0, follow="latest"),
        ],
        watch_interval_s=0.5,
        deadline_s=0.4,
        kafka_bootstrap_servers=broker,
        reco_topic=RECO_TOPIC,
        rate_limit_per_min=100,
        api_keys=[
            ApiKey(name="ops", role="admin", sha256=token_hash("admin-secret")),
            ApiKey(name="dash", role="reader", sha256=token_hash("reader-secret")),
        ],
    )
    port = free_port()
    start_serving(args, "127.0.0.1", port)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        yield {
            "client": client,
            "reg": reg,
            "v1": v1,
            "v2": v2,
            "w1": w1,
            "broker": broker,
        }
    finally:
        client.close()
        serve.shutdown()


def _weights(c: httpx.Client, w: dict[str, float]) -> None:
    r = c.put("/admin/weights", json={"weights": w}, headers=ADMIN)
    assert r.status_code == 200, r.text


def test_answers_carry_variant_model_version(app: dict[str, Any]) -> None:
    c = app["client"]
    text = c.get("/recommend/u1")
    assert text.status_code == 200 and len(text.text.split(",")) == 20
    r = c.get("/recommend/u1", params={"format": "json", "k": 10})
    js = r.json()
    assert set(js) == {
        "user_id",
        "items",
        "variant",
        "model",
        "model_version",
        "known_user",
        "fallback",
        "fallback_reason",
        "request_id",
        "latency_ms",
    }
    # one request id: Serve's, in its X-Request-ID header, the body, the trace and the event
    assert (
        Answer.model_validate(js).user_id == "u1" and r.headers["X-Request-ID"] == js["request_id"]
    )
    mine = c.get("/recommend/u1", params={"format": "json"}, headers={"X-Request-ID": "probe-7"})
    assert mine.json()["request_id"] == "probe-7" == mine.headers["X-Request-ID"]
    assert js["variant"] == assign("u1", "exp-1", {"A": 0.7, "B": 0.3})
    assert js["model"] == {"A": "itemknn", "B": "popularity"}[js["variant"]]
    assert js["model_version"] == (
        app["v1"] if js["variant"] == "A" else app["reg"].latest("popularity")
    )
    assert js["known_user"] and not js["fallback"] and js["fallback_reason"] is None
    assert len(js["items"]) == 10 == len(set(js["items"]))
    tr = c.get(f"/trace/{js['request_id']}", headers=READER)
    assert tr.status_code == 200, tr.text
    trace = tr.json()
    assert {k: trace[k] for k in js} == js, "the trace holds the answer as sent"
    assert trace["server"] == format_server(js["variant"], js["model"], js["model_version"])
    assert c.get(f"/trace/{js['request_id']}").status_code == 401
    assert c.get("/healthz").json()["status"] == "ok"


def test_sticky_assignment_and_weight_split(app: dict[str, Any]) -> None:
    c = app["client"]
    users = [f"split{i}" for i in range(300)]
    got = {u: c.get(f"/recommend/{u}", params={"format": "json"}).json()["variant"] for u in users}
    share_a = Counter(got.values())["A"] / len(users)
    assert abs(share_a - 0.7) < 0.08, share_a
    assert all(got[u] == assign(u, "exp-1", {"A": 0.7, "B": 0.3}) for u in users)
    again = {
        u: c.get(f"/recommend/{u}", params={"format": "json"}).json()["variant"] for u in users[:40]
    }
    assert all(again[u] == got[u] for u in again), "assignment must be sticky"


def test_fallback_when_the_variant_raises(app: dict[str, Any]) -> None:
    c = app["client"]
    _weights(c, {"F": 1.0})
    try:
        for u in ("u2", "u3"):  # users the broken model knows, so scoring them raises
            r = c.get(f"/recommend/{u}", params={"format": "json"})
            assert r.status_code == 200
            js = r.json()
            assert js["variant"] == "F" and js["fallback"] and js["fallback_reason"] == "error"
            assert js["model"] == "popularity" and len(js["items"]) == 20
    finally:
        _weights(c, {"A": 0.7, "B": 0.3})


def _config(c: httpx.Client) -> dict[str, Any]:
    config: dict[str, Any] = c.get("/admin/variants", headers=READER).json()["config"]
    return config


def _reconfigure_router(config: dict[str, Any]) -> None:
    """What Serve calls on a ``user_config`` update, called directly: ``serve.run`` with a new
    config would replace every replica (a new code version), not reconfigure in place."""
    from ray import serve

    handle = serve.get_deployment_handle("ABRouter", app_name="recommender")  # cached
    if not handle.is_initialized:
        # Throughput mode runs a handle's router on the caller's event loop; the test has none.
        handle._init(_run_router_in_separate_loop=True)
    handle.reconfigure.remote(config).result(timeout_s=30)


def test_fallback_when_the_variant_misses_the_deadline(app: dict[str, Any]) -> None:
    c = app["client"]
    config = _config(c)
    _reconfigure_router({**config, "deadline_s": 1e-6})
    try:
        assert _config(c)["deadline_s"] == 1e-6
        for u in ("u4", "u5"):
            js = c.get(f"/recommend/{u}", params={"format": "json"}).json()
            assert js["variant"] in {"A", "B"} and js["fallback_reason"] == "timeout"
            assert js["model"] == "popularity" and len(js["items"]) == 20
    finally:
        _reconfigure_router(config)
    assert _config(c) == config


def test_admin_auth_401_403_and_openapi(app: dict[str, Any]) -> None:
    c = app["client"]
    assert c.get("/admin/variants").status_code == 401
    assert c.get("/admin/variants", headers={"Authorization": "Bearer wrong"}).status_code == 401
    listed = c.get("/admin/variants", headers=READER)
    assert listed.status_code == 200
    assert [v["name"] for v in listed.json()["variants"]] == ["A", "B", "F", "W"]
    assert c.put("/admin/weights", json={"weights": {"A": 1}}, headers=READER).status_code == 403
    assert c.post("/admin/reload", headers=READER).status_code == 403
    assert c.post("/admin/variants/A/model", json={}, headers=READER).status_code == 403
    bad = c.put("/admin/weights", json={"weights": {"Z": 1}}, headers=ADMIN)
    assert bad.status_code == 400 and "unknown variant" in bad.text
    spec = c.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "/admin/weights" in spec["paths"] and "/recommend/{user_id}" in spec["paths"]


def test_rate_limit_429_with_retry_after(app: dict[str, Any]) -> None:
    c = app["client"]
    t0 = time.monotonic()
    answers: list[httpx.Response] = []
    while len(answers) < 400 and (not answers or answers[-1].status_code != 429):
        answers.append(c.get("/recommend/spammer"))
    refilled = (time.monotonic() - t0) * 100 / 60  # tokens added back while we were sending
    assert [r.status_code for r in answers[:100]] == [200] * 100
    assert len(answers) - 1 <= 100 + refilled + 1, (len(answers), refilled)
    refused = answers[-1]
    # 100 a minute refills a token in 0.6 s, so the wait rounds up to one second
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert c.get("/recommend/not-a-spammer").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/recommend/bad%20id!",
        "/recommend/" + "x" * 65,
        "/recommend/%00",
        "/recommend/u1?k=0",
        "/recommend/u1?k=101",
        "/recommend/u1?k=abc",
        "/recommend/u1?format=xml",
        "/recommend/..%2F..%2Fetc",
        "/trace/not-hex",
    ],
)
def test_malformed_input_is_4xx_never_5xx(app: dict[str, Any], path: str) -> None:
    r = app["client"].get(path, headers=READER)
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)


def test_weight_change_and_model_switch_under_load_fail_nothing(app: dict[str, Any]) -> None:
    c, v1, v2 = app["client"], app["v1"], app["v2"]
    stop = threading.Event()
    results: list[tuple[int, str | None]] = []

    def stream() -> None:
        with httpx.Client(base_url=str(c.base_url), timeout=30) as s:
            i = 0
            while not stop.is_set():
                r = s.get(f"/recommend/u{i % 200}", params={"format": "json"})  # known users
                ok = r.status_code == 200 and len(r.json()["items"]) == 20
                results.append(
                    (r.status_code if ok else -1, r.json().get("model_version") if ok else None)
                )
                i += 1

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for t in threads:
        t.start()

    def settle(n: int = 15) -> None:
        # let the stream run across each change, so requests overlap every transition
        target = len(results) + n
        while len(results) < target:
            stop.wait(0.02)

    try:
        settle()
        _weights(c, {"A": 1.0})
        settle()
        r = c.post("/admin/variants/A/model", json={"version": v2}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["version"] == v2, r.text
        settle()
        _weights(c, {"A": 0.5, "B": 0.5})
        settle()
        r = c.post(
            "/admin/variants/A/model", json={"model": "itemknn", "version": v1}, headers=ADMIN
        )
        assert r.status_code == 200 and r.json()["version"] == v1, r.text
        settle()
    finally:
        stop.set()
        for t in threads:
            t.join()
        _weights(c, {"A": 0.7, "B": 0.3})
    assert len(results) >= 75
    assert all(code == 200 for code, _ in results), Counter(code for code, _ in results)
    assert {v1, v2} <= {v for _, v in results}


def test_flipped_byte_switch_refused_old_version_keeps_serving(app: dict[str, Any]) -> None:
    c, reg, v1 = app["client"], app["reg"], app["v1"]
    mv = reg.register(ItemKNN().fit(_interactions(3)))
    target = next((mv.path / "artifact").glob("*.npz"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    r = c.post("/admin/variants/A/model", json={"version": mv.version}, headers=ADMIN)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert target.name in detail["reason"] and detail["still_serving"]["version"] == v1
    # reload also refuses the tampered latest and reports why
    rel = c.post("/admin/reload", headers=ADMIN).json()["variants"]
    row = next(v for v in rel if v["name"] == "A")
    assert not row["changed"] and target.name in row["error"]
    variants = c.get("/admin/variants", headers=READER).json()["variants"]
    assert next(v for v in variants if v["name"] == "A")["version"] == v1
    _weights(c, {"A": 1.0})
    try:
        js = c.get("/recommend/u5", params={"format": "json"}).json()
        assert js["model_version"] == v1 and not js["fallback"]
    finally:
        _weights(c, {"A": 0.7, "B": 0.3})


def _slot(c: httpx.Client, name: str) -> dict[str, Any]:
    variants = c.get("/admin/variants", headers=READER).json()["variants"]
    return dict(next(v for v in variants if v["name"] == name))


def test_watched_slot_picks_up_new_versions_and_refuses_tampered(
    app: dict[str, Any], tmp_path: Any
) -> None:
    import shutil

    c, reg = app["client"], app["reg"]
    assert _slot(c, "W")["version"] == app["w1"] and _slot(c, "W")["follow"] == "latest"
    w2 = reg.register(Popularity().fit(_interactions(2)), name="watched").version
    wait_until(lambda: _slot(c, "W")["version"] == w2, timeout=20, what="the watcher's switch")
    # A tampered version, moved in whole so the watcher can't see it half-written.
    side = Registry(tmp_path / "side", reg.signing)
    bad = side.register(Popularity().fit(_interactions(3)), name="watched")
    target = next((bad.path / "artifact").iterdir())
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    shutil.move(str(bad.path), str(Path(reg.uri) / "watched" / bad.version))
    wait_until(lambda: bad.version in _slot(c, "W")["watch"]["refused"], timeout=20)
    slot = _slot(c, "W")
    assert slot["version"] == w2 and target.name in slot["watch"]["refused"][bad.version]
    _weights(c, {"W": 1.0})
    try:
        js = c.get("/recommend/u7", params={"format": "json"}).json()
        assert js["variant"] == "W" and js["model_version"] == w2 and not js["fallback"]
    finally:
        _weights(c, {"A": 0.7, "B": 0.3})


def test_every_answer_is_a_json_dialect_reco_event_on_kafka(app: dict[str, Any]) -> None:
    from kafka import KafkaConsumer

    c = app["client"]
    sent = {}
    for u in ("u10", "u11", "nobody-knows-me"):
        js = c.get(f"/recommend/{u}", params={"format": "json"}).json()
        sent[js["request_id"]] = js
    consumer = KafkaConsumer(
        RECO_TOPIC,
        bootstrap_servers=app["broker"],
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    rules = ValidationRules(require_numeric_user_id=False)
    found: dict[str, RecoEvent] = {}

    def read() -> bool:
        for msg in consumer:
            # what `ray-app ingest --dialect json` would land in the snapshots
            ev = parse_json(msg.value, kind="reco_responses", rules=rules)
            assert isinstance(ev, RecoEvent)
            if ev.request_id is not None and ev.request_id in sent:
                found[ev.request_id] = ev
        return set(found) == set(sent)

    try:
        wait_until(read, timeout=30, interval=0.1, what="the reco events on Kafka")
    finally:
        consumer.close()
    for rid, ev in found.items():
        js = sent[rid]
        assert (ev.user_id, ev.items, ev.status, ev.latency_ms) == (
            js["user_id"],
            js["items"],
            200,
            js["latency_ms"],
        )
        assert ev.server == format_server(js["variant"], js["model"], js["model_version"])
        assert (ev.ab_variant, ev.model_version) == (js["variant"], js["model_version"])
    health = c.get("/admin/status", headers=READER).json()["reco_log"]
    assert health["enabled"] and health["sent"] >= 3 and health["dropped"] == 0


def test_metrics_reach_rays_prometheus_endpoint(app: dict[str, Any]) -> None:
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    want = ("ray_app_requests_total", "ray_app_latency_ms_bucket", "ray_app_rate_limited")

    def exported() -> str | None:
        text = httpx.get(url, timeout=10).text
        return text if all(w in text for w in want) else None

    text = wait_until(exported, timeout=40, interval=2, what="the app's metrics")
    assert "ray_app_requests_total{" in text and 'variant="' in text


def test_a_real_prometheus_scrapes_the_apps_metrics(app: dict[str, Any], tmp_path: Any) -> None:
    """Debian's Prometheus scrapes Ray's metrics endpoint; the app's series come back through
    Prometheus's HTTP API (CI installs the package; elsewhere this skips without it)."""
    import os
    import shutil
    import subprocess

    import ray

    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed; .ci/run installs Debian's package")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    node = next(n for n in ray.nodes() if n["Alive"])
    target = f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: ray\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for u in range(30):  # fresh traffic so the counters move while Prometheus watches
            app["client"].get(f"/recommend/u{u}")
        api = f"http://127.0.0.1:{port}/api/v1"

        def series() -> list[dict[str, Any]]:
            r = httpx.get(
                f"{api}/query",
                params={"query": '{__name__=~"ray_app_requests(_total)?"}'},
                timeout=5,
            )
            result: list[dict[str, Any]] = r.json()["data"]["result"] if r.is_success else []
            return result

        found = wait_until(series, timeout=90, interval=1, what="ray_app_requests in Prometheus")
        assert any(s["metric"].get("variant") for s in found), found[:2]
        up = httpx.get(f"{api}/query", params={"query": "up"}, timeout=5).json()["data"]["result"]
        assert any(s["value"][1] == "1" for s in up)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
