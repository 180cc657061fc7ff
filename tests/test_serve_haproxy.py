"""`ray-app serve --haproxy`: its own local Ray with HAProxy in front of the ingress replica."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import interactions, wait_until

from ray_app.broker.embedded import free_port
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry

pytestmark = pytest.mark.integration


def _haproxy_configs() -> list[str]:
    out = []
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmd.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"/haproxy") and b"-f" in argv:
            out.append(argv[argv.index(b"-f") + 1].decode())
    return out


def test_serve_haproxy_answers_through_haproxy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pairs = [(f"u{u}", f"m{i}") for u in range(50) for i in rng.choice(40, size=8, replace=False)]
    reg = Registry(tmp_path / "registry")
    model = Popularity().fit(interactions(pairs))
    reg.register(model)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local Ray
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ray_app.cli import main; main()", "serve", "--registry", str(reg.uri),
         "--model", "popularity", "--port", str(port), "--haproxy"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def answer() -> httpx.Response | None:
        if proc.poll() is not None:  # pytest.fail is not an Exception: wait_until lets it out
            pytest.fail(f"serve --haproxy exited: {proc.stdout.read() if proc.stdout else ''}")
        r = httpx.get(f"http://127.0.0.1:{port}/recommend/u1", timeout=5)
        # Never an empty 200: while cold replicas miss their deadlines the answer is the
        # ingress's own list (or a 503 with Retry-After), not an empty line.
        if r.status_code == 200 and len(r.text.split(",")) != 20:
            pytest.fail(f"a 200 without 20 ids: {r.text!r}")  # not swallowed by wait_until
        return r if r.status_code == 200 else None

    def personal() -> httpx.Response | None:
        r = answer()
        return r if r is not None and r.text.split(",") == own else None

    # u1 is known to the popularity model: its 20 most popular unseen items
    own = model.top_items(20, exclude={i for u, i in pairs if u == "u1"})
    try:
        wait_until(answer, timeout=180, interval=1, what="serve --haproxy to answer")
        wait_until(personal, timeout=60, interval=0.5, what="the model's own answer")
        # the port is HAProxy's frontend, not Serve's Python proxy
        configs = [Path(c).read_text() for c in _haproxy_configs() if Path(c).exists()]
        assert any(f"bind 127.0.0.1:{port}" in c for c in configs), configs
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
