"""`ray-app serve --haproxy`: its own local Ray with HAProxy in front of the ingress replica."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from ray_app.broker.embedded import free_port
from ray_app.models.base import Interactions
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
    rows = [(f"u{u}", f"m{i}") for u in range(50) for i in rng.choice(40, size=8, replace=False)]
    reg = Registry(tmp_path / "registry")
    reg.register(
        Popularity().fit(
            Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
        )
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local Ray
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ray_app.cli import main; main()", "serve", "--registry", str(reg.uri),
         "--model", "popularity", "--port", str(port), "--haproxy"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/recommend/u1", timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve --haproxy did not answer in 180 s"
            time.sleep(1)
        assert len(r.text.split(",")) == 20
        # the port is HAProxy's frontend, not Serve's Python proxy
        configs = [Path(c).read_text() for c in _haproxy_configs() if Path(c).exists()]
        assert any(f"bind 127.0.0.1:{port}" in c for c in configs), configs
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
