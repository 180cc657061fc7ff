"""Shared fixtures: one embedded broker, one Ray instance and one S3-compatible server per
test session."""

from __future__ import annotations

import os
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

    ray.init(
        address="local",  # never join a cluster some other process left behind
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
    )
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
