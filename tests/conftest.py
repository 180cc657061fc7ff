"""Shared fixtures: one embedded broker, one Ray instance and one S3-compatible server per
test session."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from helpers import S3Server

# Tests must not depend on (or write to) the developer's real key file.
os.environ.setdefault("RAY_APP_REGISTRY_HMAC_KEY", "test-only-registry-key")
# Serve runs in the mode `ray-app serve` and the demo use (see ray_app/runtime.py).
os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A real Kafka-protocol broker (Tansu, in memory) on a free loopback port."""
    from ray_app.broker.embedded import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b.bootstrap_servers


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole session (``ray.init`` costs ~4 s)."""
    import ray
    from helpers import LOCAL_RAY

    ray.init(**LOCAL_RAY, ignore_reinit_error=True)
    yield
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (moto_server) on a free loopback port, with one bucket."""
    from helpers import start_s3_server

    from ray_app.broker.embedded import free_port

    proc, server = start_s3_server(free_port())
    yield server
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throwaway real ``redis-server`` on a free loopback port, one per test module."""
    from helpers import start_redis_server

    from ray_app.broker.embedded import free_port

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    proc = start_redis_server(port := free_port())
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture()
def s3_uri(s3_server: S3Server) -> str:
    """A fresh ``s3://`` prefix on the session's S3 server (endpoint and credentials in it)."""
    return s3_server.uri(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def ml100k() -> object:
    """MovieLens-100K (fetched into the user cache once; never committed)."""
    from ray_app.data.movielens import load

    return load("ml-100k")


@pytest.fixture()
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
