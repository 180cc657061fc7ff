"""What a Ray job user can get wrong ends in one line: a location missing where the job runs
names the resolved path, the node and RAY_APP_HOME; the admin API's refusals say where the
service's credentials come from."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from ray_app.errors import UserError
from ray_app.retraining.control import AdminAuthError, HttpServiceControl, ServiceError

ROOT = Path(__file__).resolve().parent.parent


def _job(
    script: str, args: list[str], cwd: Path, home: Path | None, *debug: str
) -> subprocess.CompletedProcess[str]:
    """``python jobs/<script> …`` as a job's driver runs it: in another directory (the job's
    copy of its working dir), with RAY_APP_HOME from the runtime_env (or unset)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_APP_HOME", "RAY_ADDRESS")}
    if home is not None:
        env["RAY_APP_HOME"] = str(home)
    cmd = [sys.executable, str(ROOT / "jobs" / script), *debug, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-3000:]
    return lines[0]


def test_train_job_names_the_resolved_path_the_node_and_ray_app_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = str(ROOT / "configs" / "train.yaml")
    line = _one_error_line(_job("train.py", ["--config", config], tmp_path, home))
    assert f"snapshot directory {home}/data/demo/snapshots does not exist" in line
    assert f"on node {platform.node()} (RAY_APP_HOME={home})" in line


def test_without_ray_app_home_the_job_says_what_relative_paths_resolved_against(
    tmp_path: Path,
) -> None:
    line = _one_error_line(_job("train.py", ["--snapshot-dir", "data/snap"], tmp_path, None))
    assert f"{tmp_path}/data/snap does not exist" in line
    assert f"RAY_APP_HOME unset, so relative paths resolve against {tmp_path}" in line


def test_debug_keeps_the_traceback_of_a_job(tmp_path: Path) -> None:
    done = _job("train.py", ["--snapshot-dir", "data/snap"], tmp_path, None, "--debug")
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "data/snap" in done.stderr


class _Service(BaseHTTPRequestHandler):
    """An admin API whose control slot serves a version the job's registry does not have."""

    def do_GET(self) -> None:
        slots = [
            {"name": "A", "model": "ease", "version": "v1", "weight": 1.0},
            {"name": "canary", "model": "ease", "version": "v1", "weight": 0.0},
        ]
        body = json.dumps({"variants": slots}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_retrain_job_names_the_registry_it_looked_in(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    server = HTTPServer(("127.0.0.1", 0), _Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    config = str(ROOT / "configs" / "retrain.yaml")
    args = ["--config", config, "--serve-url", url, "--admin-token", "t"]
    try:
        line = _one_error_line(_job("retrain.py", args, tmp_path, home))
    finally:
        server.shutdown()
    assert f"{home}/data/demo/registry/ease/v1/manifest.json" in line
    assert f"on node {platform.node()} (RAY_APP_HOME={home})" in line


def _control(status: int, content: bytes) -> HttpServiceControl:
    def answer(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content)

    return HttpServiceControl("http://svc:8000", "t", transport=httpx.MockTransport(answer))


@pytest.mark.parametrize("content", [b"", b"<html>proxy</html>", b'{"detail": "x"}'])
def test_an_answer_that_is_not_the_admin_api_is_one_line(content: bytes) -> None:
    with pytest.raises(ServiceError) as err:
        _control(200, content).variants()
    message = str(err.value)
    assert "http://svc:8000/admin/variants answered 200 without a variant list" in message
    assert f"({len(content)} bytes)" in message and "\n" not in message


def test_401_says_where_a_deployed_service_takes_its_keys_from() -> None:
    with pytest.raises(AdminAuthError) as err:
        _control(401, b'{"detail": "unknown bearer token"}').variants()
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    assert "`ray start` environment" in message and "args.api_keys" in message
