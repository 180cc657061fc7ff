"""Exactly-once under SIGKILL: every produced offset lands in snapshots or dead letters once,
on a local directory and on object storage (a real S3-compatible server), where there is no
rename and the commit marker being the last object written is what makes a batch durable."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import assert_exactly_once, landed_offsets
from kafka import KafkaProducer

from ray_app.broker.embedded import ensure_topics
from ray_app.snapshots.store import committed_batches

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAD = [
    b"2024-01-05T10:11:12,12,GET /nope/42",
    b"not a log line at all",
    b"2024-01-05T10:11:12,12,GET /rate/42=9",
    b"2024-01-05T10:11:12,abc,GET /data/m/42/1.mpg",
    b"2024-13-45T10:11:12,12,GET /data/m/42/1.mpg",
    b"\xff\xfe\x00 broken utf8",
    b"2024-01-05T10:11:12,12,GET /data/m/42/-3.mpg",
]


def _events(n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        if rng.random() < 0.03:
            out.append(rng.choice(BAD))
        elif i % 4 == 3:
            out.append(
                f"2024-01-0{1 + i % 5}T10:{i % 60:02d}:00.{i % 1000:03d},{i % 97},GET /rate/m{i % 50}={1 + i % 5}".encode()
            )
        else:
            out.append(
                f"2024-01-0{1 + i % 5}T10:{i % 60:02d}:00,{i % 97},GET /data/m/the+movie+{i % 50}/{i % 9}.mpg".encode()
            )
    return out


def _ingest_cmd(broker: str, config: Path, idle: float | None) -> list[str]:
    cmd = [sys.executable, "-m", "ray_app", "ingest", "-b", broker, "--config", str(config)]
    return [*cmd, "--until-idle", str(idle)] if idle else cmd


@pytest.fixture(params=["local", "s3"])
def snapshot_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the consumer writes: a local directory, or an ``s3://`` prefix whose URI carries
    the endpoint and credentials (the ingest subprocesses need no environment)."""
    if request.param == "local":
        return str(tmp_path / "snap")
    uri: str = request.getfixturevalue("s3_uri")
    return uri


def test_sigkill_loses_and_duplicates_nothing(
    broker: str, tmp_path: Path, snapshot_location: str
) -> None:
    rng = random.Random(7)
    topic = f"crash-{os.getpid()}-{'s3' if snapshot_location.startswith('s3') else 'local'}"
    ensure_topics(broker, {topic: 2})
    values = _events(40_000, rng)
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=10)
    futures = [producer.send(topic, v, partition=i % 2) for i, v in enumerate(values)]
    producer.flush()
    produced = Counter((f.get().partition, f.get().offset) for f in futures)
    producer.close()
    assert sum(produced.values()) == len(values)

    snaps = snapshot_location
    config = tmp_path / "ingest.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "topics": [topic],
                "group_id": topic,
                "snapshot_dir": snaps,
                "max_batch_records": 700,
                "max_batch_delay_s": 0.2,
                "max_poll_records": 300,
            }
        )
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(
            _ingest_cmd(broker, config, None),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(3.5, 6.0))  # after the group join, mid-stream
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 3
    mid = len(committed_batches(snaps))
    done = subprocess.run(
        _ingest_cmd(broker, config, 5.0), env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(committed_batches(snaps)) >= mid

    # Every data file left, not only the durable ones: recovery must have removed the rest.
    seen, dead = landed_offsets(str(snaps))
    assert_exactly_once(seen, set(produced))
    assert dead == sum(1 for v in values if v in BAD)
