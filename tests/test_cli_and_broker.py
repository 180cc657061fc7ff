"""The command line, the embedded broker's lifecycle and the MovieLens fetch fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ray_app.cli import app
from ray_app.data import movielens

COMMANDS = [
    [], ["data"], ["data", "fetch"], ["broker"], ["replay"], ["ingest"], ["train"], ["serve"],
    ["demo"], ["registry"], ["registry", "list"], ["registry", "verify"], ["snapshots"],
    ["snapshots", "compact"], ["snapshots", "stats"], ["data", "synth"], ["recommend-batch"],
    ["tune"], ["retrain"], ["simulate"], ["online-eval"], ["experiment"], ["experiment", "report"],
    ["drift"], ["recommend-all"],
]  # fmt: skip


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(cmd: list[str]) -> None:
    result = CliRunner().invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_python_dash_m_is_the_same_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ray_app", "--help"], capture_output=True, text=True, check=True
    )
    for word in ("replay", "ingest", "train", "serve", "demo"):
        assert word in out.stdout


def test_bad_config_fails_at_start_naming_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "ingest.yaml"
    cfg.write_text("topics: [movielog]\nmax_batch_records: -5\nbogus: 1\n")
    result = CliRunner().invoke(app, ["ingest", "-b", "127.0.0.1:1", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "max_batch_records" in result.output and "bogus" in result.output


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


def test_fetch_refuses_a_wheel_with_the_wrong_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        movielens, "_fetch_official", lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    )
    monkeypatch.setattr(movielens, "RECBOLE_WHEEL_SHA256", "0" * 64)
    with pytest.raises(RuntimeError, match="sha256"):
        movielens.fetch("ml-100k", tmp_path)
    assert not (tmp_path / "ml-100k").exists(), "nothing unverified is left in the cache"


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="ml-100k"):
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
    with pytest.raises(RuntimeError, match="md5"):
        movielens.fetch("ml-latest-small", tmp_path / "other")
