"""Connecting to Ray: a local Ray unless told to join a cluster, and a cluster that does not
answer is one line within seconds, never minutes of "Failed to connect to GCS"."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ray_app.broker.embedded import free_port
from ray_app.runtime import (
    RayUnreachable,
    check_cluster,
    cluster_address,
    host_port,
    where_this_runs,
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, **extra}


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_no_address_means_a_local_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster_address(None) is None
    assert cluster_address("local") is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # what `ray job submit` gives a job
    assert cluster_address(None) == "10.0.0.5:6379"
    assert cluster_address("local") is None, "an explicit local wins over RAY_ADDRESS"


def test_addresses_ray_init_takes_are_probed_at_their_port() -> None:
    assert host_port("head:6379") == ("head", 6379)
    assert host_port("ray://head:10001") == ("head", 10001)
    assert host_port("[::1]:6379") == ("::1", 6379)


@pytest.mark.parametrize("bad", ["http://head:8265", "head", "head:port"])
def test_an_address_ray_init_cannot_take_names_the_fix(bad: str) -> None:
    with pytest.raises(RayUnreachable) as err:
        host_port(bad, "RAY_ADDRESS")
    message = str(err.value)
    assert f"RAY_ADDRESS={bad}" in message and ":6379" in message
    assert "\n" not in message
    if bad.startswith("http"):
        assert "ray job submit" in message


def test_a_cluster_that_does_not_answer_is_one_line() -> None:
    addr = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RayUnreachable) as err:
        check_cluster(addr, "--ray-address", timeout_s=2)
    message = str(err.value)
    assert f"the Ray cluster at {addr} (--ray-address) does not answer" in message
    assert "ray start --head" in message and "\n" not in message


def test_a_listening_cluster_address_passes() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        addr = f"127.0.0.1:{server.getsockname()[1]}"
        assert check_cluster(addr, timeout_s=2) == addr


def test_where_this_runs_names_the_node_and_ray_app_home(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    monkeypatch.setenv("RAY_APP_HOME", "/mnt/shared/ray-app")
    assert where_this_runs() == f"on node {platform.node()} (RAY_APP_HOME=/mnt/shared/ray-app)"
    monkeypatch.delenv("RAY_APP_HOME")
    assert f"RAY_APP_HOME unset, so relative paths resolve against {Path.cwd()}" in (
        where_this_runs()
    )


@pytest.mark.parametrize("via", ["flag", "env"])
def test_the_cli_fails_in_seconds_on_a_dead_cluster(via: str) -> None:
    addr = f"127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "ray_app", "serve"]
    env = _env()
    if via == "flag":
        cmd += ["--ray-address", addr]
    else:
        env["RAY_ADDRESS"] = addr
    # A hang (the bug) shows up as TimeoutExpired; Ray's own retries take over a minute.
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=45)
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    source = "--ray-address" if via == "flag" else "RAY_ADDRESS"
    assert f"{addr} ({source}) does not answer" in line


@pytest.mark.integration
def test_a_stale_cluster_file_is_not_joined() -> None:
    """A killed `ray start` leaves its GCS address in ``<temp dir>/ray_current_cluster``; plain
    ``ray.init()`` would try to join it for over a minute. init_ray starts a local Ray."""
    # Ray's socket paths must stay short, so not pytest's tmp_path.
    with tempfile.TemporaryDirectory(prefix="rs", dir="/tmp") as temp:
        stale = f"127.0.0.1:{free_port()}"
        (Path(temp) / "ray_current_cluster").write_text(stale)
        script = (
            "import ray\n"
            "from ray_app.runtime import init_ray\n"
            f"init_ray(num_cpus=1, include_dashboard=False, _temp_dir={temp!r})\n"
            "print('gcs', ray.get_runtime_context().gcs_address)\n"
            "ray.shutdown()\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    gcs = done.stdout.split("gcs ", 1)[1].strip()
    assert gcs.rsplit(":", 1)[1] != stale.rsplit(":", 1)[1], "joined the stale cluster"
    assert "Started a local Ray instance" in done.stderr


def test_a_job_passes_root_flags_before_the_command() -> None:
    from ray_app.runtime import job_argv

    argv = ["--config", "configs/train.yaml", "--debug"]
    assert job_argv("train", argv) == ["--debug", "train", "--config", "configs/train.yaml"]
