"""Connection-level limits against a real served app (issue 14, defects 2, 3, 10): oversized
headers get 431, idle keep-alive connections are closed by the proxy, one X-Request-Id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import interactions, wait_until

from ray_app.broker.embedded import free_port
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry
from ray_app.serving.app import build_app
from ray_app.serving.config import PROXY_HTTP_OPTIONS, ServeArgs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    from ray import serve

    root = tmp_path_factory.mktemp("proxy") / "registry"
    Registry(root).register(
        Popularity().fit(interactions((f"u{u}", f"m{u % 40}") for u in range(200)))
    )
    port = free_port()
    serve.shutdown()  # http_options apply only when Serve starts
    serve.start(http_options={"host": "127.0.0.1", "port": port, **PROXY_HTTP_OPTIONS})
    serve.run(build_app(ServeArgs(registry=str(root), model="popularity")), name="proxy")
    try:
        yield port
    finally:
        serve.shutdown()


def test_the_shipped_config_sets_the_same_proxy_limits() -> None:
    shipped = yaml.safe_load((Path(__file__).parents[1] / "serve_config.yaml").read_text())
    for key, value in PROXY_HTTP_OPTIONS.items():
        assert shipped["http_options"][key] == value


def test_oversized_headers_are_refused_431(served: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{served}", timeout=30) as c:
        r = c.get("/recommend/u1", headers={"X-Junk": "a" * 64 * 1024})
        assert r.status_code == 431
        assert c.get("/recommend/u1").status_code == 200


def test_one_request_id_per_answer(served: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{served}", timeout=30) as c:
        r = c.get("/recommend/u1", params={"format": "json"})
        ids = [v for k, v in r.headers.multi_items() if k.lower() == "x-request-id"]
        assert ids == [r.json()["request_id"]]
        mine = c.get("/recommend/u1", params={"format": "json"}, headers={"X-Request-ID": "p-1"})
        assert [v for k, v in mine.headers.multi_items() if k.lower() == "x-request-id"] == ["p-1"]


def test_an_idle_keep_alive_connection_is_closed(served: int) -> None:
    sock = socket.create_connection(("127.0.0.1", served), timeout=60)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        closed: list[float] = []

        def peer_closed() -> bool:
            if sock.recv(1) == b"":
                closed.append(time.monotonic() - t0)
            return bool(closed)

        wait_until(peer_closed, timeout=30, interval=0.1, what="the proxy closing an idle socket")
        assert closed[0] < PROXY_HTTP_OPTIONS["keep_alive_timeout_s"] + 10
    finally:
        sock.close()


def _closed_within(sock: socket.socket, timeout: float) -> float:
    """Seconds until the peer closes ``sock`` (fails past ``timeout``)."""
    sock.settimeout(timeout)
    t0 = time.monotonic()
    while sock.recv(65536):  # a 408 or an error page may come first
        pass
    return time.monotonic() - t0


@pytest.mark.slow
def test_haproxy_mode_closes_idle_and_half_sent_connections(tmp_path: Path) -> None:
    """``ray-app serve --haproxy`` with the client timeout ``init_ray`` sets (30 s by default;
    2 s here): a connection that never sends, or stops mid-headers, is closed."""
    reg = Registry(tmp_path / "registry")
    reg.register(Popularity().fit(interactions((f"u{u}", f"m{u % 40}") for u in range(200))))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] = "2"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ray_app.cli import main; main()", "serve", "--registry",
         str(reg.uri), "--model", "popularity", "--port", str(port), "--haproxy"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200,
            timeout=240,
            interval=1,
            what="serve --haproxy to be ready",
        )
        idle = socket.create_connection(("127.0.0.1", port))
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /recommend/u1 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert _closed_within(idle, 30) < 15
        assert _closed_within(half, 30) < 15
        big = httpx.get(f"{base}/recommend/u1", headers={"X-Junk": "a" * 64 * 1024}, timeout=30)
        assert big.status_code in (400, 431)  # HAProxy's buffer refuses it before Python
        assert httpx.get(f"{base}/recommend/u1", timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
