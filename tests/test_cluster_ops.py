"""Ray-native operation for real: the README's "A Ray cluster" section, run as written against a
`ray start --head` cluster of the test's own (temp dir, ports, auth token; stopped at the end).

ingest job → train job → `serve deploy serve_config.yaml` → more events → ingest job again →
retrain job against the deployed service (traffic flowing) through to a promotion; the jobs are
found in the dashboard's Jobs API and the app in its Serve API.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers import wait_http, wait_until
from pydantic import SecretStr

from ray_app.broker.embedded import free_port
from ray_app.broker.settings import KafkaSettings
from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import Registry
from ray_app.replay.events import ReplayConfig
from ray_app.replay.run import replay_movielens

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
README = ROOT / "README.md"

# The README's client commands, as the cluster test runs them (HEAD, $JOB_ENV and the paths
# are substituted); test_readme_cluster_section_is_what_the_test_runs keeps them in step.
SUBMIT = "ray job submit --address http://HEAD:8265 --working-dir . --runtime-env-json"
README_JOB_ENV = (
    """export JOB_ENV='{"env_vars": {"RAY_APP_HOME": "/mnt/shared/ray-app", """
    """"RAY_APP_KAFKA_BOOTSTRAP_SERVERS": "broker1:9092"}}'"""
)
INGEST = (
    f'{SUBMIT} "$JOB_ENV" -- python jobs/ingest.py --consumers 2 --config configs/ingest.yaml '
    "--until-idle 30"
)
TRAIN = f'{SUBMIT} "$JOB_ENV" -- python jobs/train.py --config configs/train.yaml'
DEPLOY = "serve deploy serve_config.yaml --address http://HEAD:8265"
RETRAIN = (
    f'{SUBMIT} "$JOB_ENV" -- python jobs/retrain.py --config configs/retrain.yaml '
    "--serve-url http://HEAD:8000"
)
REGISTRY_KEY = "cluster-test-registry-key"
"""The nodes' registry signing key; the test reads the registry with it too."""
NODE_ENV = ("RAY_APP_HOME", "RAY_APP_REGISTRY_HMAC_KEY", "RAY_APP_ADMIN_TOKEN")
"""What the README tells users to export before `ray start` on every node."""

REPLAY_USERS = 40


def _cluster_section() -> str:
    text = README.read_text()
    start = text.index("### A Ray cluster")
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)]


def test_readme_cluster_section_is_what_the_test_runs() -> None:
    section = _cluster_section()
    for line in (README_JOB_ENV, INGEST, TRAIN, DEPLOY, RETRAIN, "ray start --head"):
        assert line in section, line
    for name in (*NODE_ENV, "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN"):
        assert f"export {name}" in section or f" {name}" in section, name


@dataclass
class Cluster:
    """A running `ray start --head` and what a client needs to use it."""

    home: Path
    dashboard: str
    serve_port: int
    client_env: dict[str, str]
    node_env: dict[str, str]
    auth: dict[str, str]

    def api(self, path: str) -> Any:
        r = httpx.get(f"{self.dashboard}{path}", headers=self.auth, timeout=30)
        r.raise_for_status()
        return r.json()


def _client_env(base: dict[str, str], token: str) -> dict[str, str]:
    # A client shell: nothing of the nodes' settings, token auth as the README says.
    env = {k: v for k, v in base.items() if not k.startswith(("RAY_APP_", "RAY_ADDRESS"))}
    return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Ray's socket paths must stay short, so not pytest's tmp_path.
    temp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    home = temp / "home"
    home.mkdir()
    token = uuid.uuid4().hex
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    base["PATH"] = f"{VENV_BIN}:{base.get('PATH', '')}"  # `source .venv/bin/activate`
    node_env = {
        **_client_env(base, token),
        "RAY_APP_HOME": str(home),
        "RAY_APP_REGISTRY_HMAC_KEY": REGISTRY_KEY,
        "RAY_APP_ADMIN_TOKEN": uuid.uuid4().hex,
    }
    # Every fixed default port of its own: another Ray on the machine may hold 6379, 8265,
    # 10001 or the dashboard agent's 52365 (without its agent a head accepts no jobs).
    names = [
        "port",
        "dashboard-port",
        "ray-client-server-port",
        "metrics-export-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "node-manager-port",
        "object-manager-port",
    ]
    ports = {name: free_port() for name in names}
    # `ray start --head` as the README says, plus what a shared test machine needs: its own
    # temp dir and ports, CPUs for jobs beside the Serve replicas, and --block so that the
    # whole cluster is one process group this test can stop without touching other clusters.
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--num-cpus=4"]
    cmd += [f"--{k}={v}" for k, v in ports.items()]
    cmd += ["--dashboard-host=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats"]
    log = (temp / "ray-start.log").open("w")
    proc = subprocess.Popen(
        cmd, env=node_env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    dashboard = f"http://127.0.0.1:{ports['dashboard-port']}"
    c = Cluster(
        home=home,
        dashboard=dashboard,
        serve_port=free_port(),
        client_env=_client_env(base, token),
        node_env=node_env,
        auth={"Authorization": f"Bearer {token}"},
    )
    try:
        wait_until(lambda: proc.poll() is None and c.api("/api/version"), 120, 1, "dashboard")
        # The dashboard answers before the head's job agent has registered; until then a
        # submission fails with "No available agent" (more so on a busy machine).
        wait_until(lambda: _accepts_jobs(c), 180, 2, "the cluster to accept jobs")
        yield c
    finally:
        _stop(proc)
        log.close()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def _accepts_jobs(cluster: Cluster) -> bool:
    r = httpx.post(
        f"{cluster.dashboard}/api/jobs/",
        json={"entrypoint": "true"},
        headers=cluster.auth,
        timeout=30,
    )
    return r.status_code == 200


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop this cluster's processes only (`ray stop` would stop every Ray on the machine)."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # children may outlive the `ray start` process
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


def _job_env(cluster: Cluster, broker: str) -> str:
    """$JOB_ENV of the README with this cluster's home and broker."""
    value = shlex.split(README_JOB_ENV.removeprefix("export JOB_ENV="))[0]
    return value.replace("/mnt/shared/ray-app", str(cluster.home)).replace("broker1:9092", broker)


def _run(
    cluster: Cluster, line: str, job_env: str = "", timeout: float = 600, returncode: int = 0
) -> subprocess.CompletedProcess[str]:
    """One README client line, run from the repository root with HEAD and $JOB_ENV filled in."""
    text = line.replace("HEAD:8265", cluster.dashboard.removeprefix("http://"))
    text = text.replace("HEAD:8000", f"127.0.0.1:{cluster.serve_port}")
    argv = [a.replace("$JOB_ENV", job_env) for a in shlex.split(text)]
    argv[0] = str(VENV_BIN / argv[0])
    done = subprocess.run(
        argv, cwd=ROOT, env=cluster.client_env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == returncode, f"{text}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _submission_id(done: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"Job '(raysubmit_\w+)' submitted successfully", done.stdout + done.stderr)
    assert found, done.stdout[-2000:]
    return found[1]


def _replay(broker: str, users: int) -> int:
    stats = replay_movielens(
        KafkaSettings(bootstrap_servers=broker), ReplayConfig(users=users, watch_minutes=1)
    )
    return stats.events


def _serve_config(cluster: Cluster) -> Path:
    """serve_config.yaml as shipped, on a free port (a shared machine may use 8000)."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = cluster.serve_port
    path = cluster.home.parent / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Traffic:
    """Users asking for recommendations in a background thread while the canary is judged."""

    def __init__(self, url: str, users: int) -> None:
        self.url, self.users = url, users
        self.statuses: Counter[int] = Counter()
        self.empty_200 = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                for user in range(1, self.users + 1):
                    try:
                        r = client.get(f"{self.url}/recommend/{user}")
                    except httpx.TransportError:
                        continue
                    self.statuses[r.status_code] += 1
                    self.empty_200 += r.status_code == 200 and not r.text.strip()
                    time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.realdata
@pytest.mark.timeout(1800)  # about 7 minutes alone on 2 cores; jobs start slower on a busy one
def test_readme_cluster_section_end_to_end(cluster: Cluster, broker: str, ml100k: object) -> None:
    job_env = _job_env(cluster, broker)
    registry = Registry(
        str(cluster.home / "data" / "demo" / "registry"),
        SigningConfig(hmac_key=SecretStr(REGISTRY_KEY)),
    )
    # RAY_APP_HOME pointing where there is no data: the job fails in one line saying where.
    nowhere = cluster.home.parent / "nowhere"
    failed = _run(cluster, TRAIN, job_env.replace(str(cluster.home), str(nowhere)), returncode=1)
    logs = failed.stdout + failed.stderr
    assert f"error: snapshot directory {nowhere}/data/demo/snapshots does not exist" in logs
    assert f"(RAY_APP_HOME={nowhere})" in logs and "Traceback" not in logs

    assert _replay(broker, REPLAY_USERS) > 0
    ingest = _submission_id(_run(cluster, INGEST, job_env))
    assert any((cluster.home / "data" / "demo" / "snapshots").rglob("*.parquet"))
    train = _submission_id(_run(cluster, TRAIN, job_env))
    first = registry.latest("ease")
    assert first and registry.latest("itemknn") and registry.latest("popularity")

    _run(cluster, DEPLOY.replace("serve_config.yaml", str(_serve_config(cluster))))
    url = f"http://127.0.0.1:{cluster.serve_port}"
    answer = wait_http(f"{url}/recommend/1", timeout=300)
    assert len(answer.text.split(",")) == 20

    def running() -> bool:
        apps = cluster.api("/api/serve/applications/")["applications"]
        return bool(apps["recommender"]["status"] == "RUNNING")

    wait_until(running, 300, 2, "the Serve API to show the app RUNNING")
    admin = {"Authorization": f"Bearer {cluster.node_env['RAY_APP_ADMIN_TOKEN']}"}
    slots = httpx.get(f"{url}/admin/variants", headers=admin, timeout=30).json()["variants"]
    assert {v["name"]: v["version"] for v in slots}["A"] == first

    # New events since the serving version: the same users' activity again (new offsets),
    # so the candidate's holdout metrics match the serving version's and the gate passes.
    assert _replay(broker, REPLAY_USERS) > 0
    again = _submission_id(_run(cluster, INGEST, job_env))
    with Traffic(url, REPLAY_USERS) as traffic:
        done = _run(cluster, RETRAIN, job_env)
    retrain = _submission_id(done)
    assert "promoted" in done.stdout, done.stdout[-3000:]
    promoted = registry.resolve("ease", "production")
    assert promoted and promoted != first
    slots = httpx.get(f"{url}/admin/variants", headers=admin, timeout=30).json()["variants"]
    assert {v["name"]: v["version"] for v in slots}["A"] == promoted
    assert traffic.statuses[200] > 0 and traffic.empty_200 == 0, traffic.statuses
    assert set(traffic.statuses) <= {200, 429}, traffic.statuses

    jobs = {j["submission_id"]: j for j in cluster.api("/api/jobs/")}
    for sid, script in ((ingest, "ingest"), (train, "train"), (again, "ingest")):
        assert jobs[sid]["status"] == "SUCCEEDED" and f"jobs/{script}.py" in jobs[sid]["entrypoint"]
    assert jobs[retrain]["status"] == "SUCCEEDED"
