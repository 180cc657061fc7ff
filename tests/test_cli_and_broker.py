"""The command line (every command's help, one-line errors, --debug, README flags), the
embedded broker's lifecycle and the MovieLens fetch fallback."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest
import typer
import yaml
from helpers import write_ratings_snapshot
from typer.testing import CliRunner

from ray_app.cli import app
from ray_app.commands.common import error_message
from ray_app.config import ConfigError
from ray_app.data import movielens
from ray_app.errors import UserError


def _commands(
    command: typer.core.TyperGroup | typer.core.TyperCommand, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], typer.core.TyperCommand | typer.core.TyperGroup]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_walk_finds_every_group_and_sub_command() -> None:
    found = {" ".join(path) for path, _ in ALL_COMMANDS}
    # a few known leaves and groups, so that a broken walk cannot pass with an empty list
    assert {"", "data", "data fetch", "data synth", "recommend-batch", "recommend-all"} <= found
    assert {"snapshots stats", "registry verify", "experiment report", "retrain"} <= found
    assert len(found) >= 25


@pytest.mark.parametrize(
    ("path", "command"), ALL_COMMANDS, ids=[" ".join(p) or "root" for p, _ in ALL_COMMANDS]
)
def test_every_command_has_help(
    path: tuple[str, ...], command: typer.core.TyperCommand | typer.core.TyperGroup
) -> None:
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    undocumented = [
        p.name
        for p in command.params
        if p.name not in ("help", "install_completion", "show_completion")
        and not (getattr(p, "help", None) or "").strip()
    ]
    assert not undocumented, f"{' '.join(path) or 'ray-app'}: no help for {undocumented}"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_python_dash_m_is_the_same_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ray_app", "--help"], capture_output=True, text=True, check=True
    )
    for word in ("replay", "ingest", "train", "serve", "demo", "recommend-all", "--debug"):
        assert word in out.stdout


README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_command_lines() -> list[list[str]]:
    """Every ``ray-app …`` command in the README (code blocks and inline code), and the
    ``python jobs/<stage>.py …`` job lines as the ``ray-app <stage> …`` they run."""
    text = README.read_text()
    found = re.findall(r"^ray-app [^\n#]+", text, flags=re.M)
    found += re.findall(r"`(ray-app [^`]+)`", text)
    found += [
        f"ray-app {stage} {rest}"
        for stage, rest in re.findall(r"python jobs/(\w+)\.py ([^\n#]+)", text)
    ]
    return [shlex.split(line.replace("HOST:PORT", "127.0.0.1:9092")) for line in found]


README_COMMANDS = _readme_command_lines()


def test_readme_has_commands_to_check() -> None:
    assert len(README_COMMANDS) >= 20
    assert ["ray-app", "replay", "-b", "127.0.0.1:9092", "--users", "100", "--rate", "5000"] in (
        README_COMMANDS
    )


@pytest.mark.parametrize("line", README_COMMANDS, ids=" ".join)
def test_readme_commands_parse(line: list[str]) -> None:
    # --help is eager: every option before it must exist, nothing runs.
    result = CliRunner().invoke(app, [*line[1:], "--help"])
    assert result.exit_code == 0, result.output


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and "Traceback" not in output
    return lines[0]


def test_bad_config_is_one_line_naming_the_fields(tmp_path: Path) -> None:
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text("topics: [movielog]\nmax_batch_records: -5\nbogus: 1\n")
    result = CliRunner().invoke(app, ["ingest", "-b", "127.0.0.1:1", "--config", str(cfg)])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert str(cfg) in line and "max_batch_records" in line and "bogus" in line


def test_missing_snapshot_dir_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for args in (
        ["train", "--snapshot-dir", str(missing)],
        ["snapshots", "stats", "--snapshot-dir", str(missing)],
        ["drift", "--snapshot-dir", str(missing)],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        line = _one_error_line(result.output)
        assert str(missing) in line and "ray-app ingest" in line


def test_unreachable_broker_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_APP_KAFKA_BOOTSTRAP_TIMEOUT_MS", "1000")
    args = ["ingest", "-b", "127.0.0.1:1", "--until-idle", "1", "--snapshot-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert "127.0.0.1:1" in line and "--bootstrap-servers" in line


def test_broker_storage_it_cannot_use_is_one_line() -> None:
    result = CliRunner().invoke(app, ["broker", "--port", "0", "--storage", "sqlite://b.db"])
    assert result.exit_code == 2
    line = _one_error_line(result.output)
    assert "sqlite://b.db" in line and "memory://tansu/" in line and "s3://" in line


def test_an_error_from_a_ray_task_shows_the_original_message() -> None:
    class RemoteError(UserError):  # what Ray raises: also an instance of the original class
        def __init__(self, cause: Exception) -> None:
            super().__init__(f"ray::actor()\n  Traceback (most recent call last):\n{cause}")
            self.cause = cause

    assert error_message(RemoteError(UserError("fix it like so"))) == "fix it like so"
    assert error_message(RuntimeError("a bug")) is None, "bugs keep their traceback"


class _Unauthorized(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"detail": "missing or invalid bearer token"}')

    def log_message(self, *_: object) -> None:
        pass


@pytest.mark.integration
def test_401_from_the_service_is_one_line(ray_session: None, tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    snaps = tmp_path / "snapshots"
    ratings = pd.DataFrame(
        {"user_id": ["1", "2"], "item_id": ["10", "11"], "rating": [4.0, 5.0], "timestamp": [1, 2]}
    )
    write_ratings_snapshot(snaps, ratings)
    cfg = tmp_path / "retrain.yaml"
    cfg.write_text(yaml.safe_dump({"snapshot_dir": str(snaps), "registry": str(tmp_path / "r")}))
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        result = CliRunner().invoke(
            app, ["retrain", "--config", str(cfg), "--serve-url", url, "--admin-token", "wrong"]
        )
    finally:
        server.shutdown()
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert "401" in line and "token" in line.lower()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    cmd = [sys.executable, "-m", "ray_app"]
    plain = subprocess.run(
        [*cmd, "train", "--snapshot-dir", missing], capture_output=True, text=True
    )
    assert plain.returncode == 2
    assert _one_error_line(plain.stderr) and not plain.stdout.strip()
    debug = subprocess.run(
        [*cmd, "--debug", "train", "--snapshot-dir", missing], capture_output=True, text=True
    )
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "UserError" in debug.stderr


@pytest.mark.integration
def test_readme_replay_with_rate_throttles(broker: str) -> None:
    """`ray-app replay -b HOST:PORT --users 100 --rate 5000`, the README's command, at a size
    whose pace is measurable: 60 events at 100/s take about 0.6 s."""
    args = ["replay", "-b", broker, "--topic", f"rate-{os.getpid()}", "--users", "2"]
    start = time.monotonic()
    result = CliRunner().invoke(app, [*args, "--max-events", "60", "--rate", "100"])
    took = time.monotonic() - start
    assert result.exit_code == 0, result.output
    assert "replayed 60 events" in result.output
    assert took >= 0.55, "--rate paces production"
    # a short last chunk is paced by what was sent, not by a full 1000-event chunk (10 s here)
    assert took < 8, took


@pytest.mark.integration
def test_embedded_broker_starts_answers_and_stops() -> None:
    from kafka import KafkaAdminClient

    from ray_app.broker.embedded import EmbeddedBroker

    with EmbeddedBroker() as b:
        admin = KafkaAdminClient(bootstrap_servers=[b.bootstrap_servers])
        admin.list_topics()
        admin.close()
        proc = b._proc
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None, "broker process is gone after the block"


@pytest.mark.integration
def test_broker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    script = (
        "from ray_app.broker.embedded import EmbeddedBroker\n"
        "import time\n"
        "b = EmbeddedBroker().start()\n"
        "print(b._proc.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    broker_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(broker_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    # reap if it became our zombie-less orphan still running
    pytest.fail(f"broker {broker_pid} outlived its SIGKILLed parent")


@pytest.mark.realdata
def test_fetch_falls_back_to_the_wheel_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: object, **__: object) -> Path:
        raise OSError("no route to grouplens.org")

    monkeypatch.setattr(movielens, "_fetch_official", refuse)
    path = movielens.fetch("ml-100k", tmp_path)
    assert "recbole" in (path / "SOURCE").read_text()
    ml = movielens.load("ml-100k", tmp_path)
    assert len(ml.ratings) == 100_000 and ml.ratings.user_id.nunique() == 943
    assert len(ml.movies) == 1682 and {"title", "year", "genres"} <= set(ml.movies.columns)
    toy = ml.movies.set_index("item_id").loc["1"]
    assert toy.title == "Toy Story" and toy.year == 1995 and "Animation" in toy.genres
    assert {"age", "gender", "occupation"} <= set(ml.users.columns)


@pytest.mark.realdata
def test_fetch_refuses_a_wheel_with_the_wrong_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        movielens, "_fetch_official", lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    )
    monkeypatch.setattr(movielens, "RECBOLE_WHEEL_SHA256", "0" * 64)
    with pytest.raises(movielens.FetchError, match="sha256"):
        movielens.fetch("ml-100k", tmp_path)
    assert not (tmp_path / "ml-100k").exists(), "nothing unverified is left in the cache"


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'ml-7'; choose one of .*ml-100k"):
        movielens.fetch("ml-7")


def test_official_download_is_checked_against_the_published_md5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "ml-latest-small/ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
        )
        zf.writestr(
            "ml-latest-small/movies.csv",
            "movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n",
        )
    payload = buf.getvalue()
    published = {"md5": hashlib.md5(payload).hexdigest()}

    class Resp(io.BytesIO):
        def __enter__(self) -> Resp:
            return self

        def __exit__(self, *_: object) -> None:
            pass

    def fake_urlopen(url: str, timeout: float = 0) -> Resp:
        if url.endswith(".md5"):
            return Resp(f"{published['md5']}  ml-latest-small.zip\n".encode())
        return Resp(payload)

    monkeypatch.setattr(movielens.urllib.request, "urlopen", fake_urlopen)
    ml = movielens.load("ml-latest-small", tmp_path)
    assert ml.ratings.iloc[0].item_id == "1" and ml.movies.iloc[0].year == 1995
    published["md5"] = "0" * 32
    with pytest.raises(movielens.FetchError, match="md5"):
        movielens.fetch("ml-latest-small", tmp_path / "other")
