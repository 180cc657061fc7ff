"""The process around a stage: connecting to Ray (local or a cluster) and waiting for Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    serve_haproxy: bool = False,
    **kwargs: Any,
) -> str:
    """``ray.init`` once; returns the dashboard URL (empty if the dashboard is off).

    ``address`` (or ``RAY_ADDRESS``) joins an existing cluster; otherwise a local Ray starts.
    Ray 2.60 clusters started with ``ray start`` use token auth: clients need
    ``RAY_AUTH_MODE=token`` (the token lives in ``~/.ray/auth_token``).

    ``serve_haproxy`` starts a local Ray whose Serve puts HAProxy (bundled with ``ray[serve]``)
    in front of the ingress replicas instead of the Python proxy actor; BENCHMARKS.md
    ("Serving under load") has what it changes. Serve then binds replica ports on all
    interfaces so HAProxy on other nodes can reach them, which is why it is opt-in on a laptop.
    On a cluster set ``RAY_SERVE_ENABLE_HA_PROXY=1`` in the nodes' environment instead.
    """
    import ray

    if ray.is_initialized():
        return str(getattr(ray.get_runtime_context(), "dashboard_url", "") or "")
    addr = address or os.environ.get("RAY_ADDRESS")
    opts: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, **kwargs}
    # Ray Serve's throughput-optimised mode (gRPC between deployments, direct ingress, no
    # per-request log lines) is what the serving figures in BENCHMARKS.md were measured with.
    # It is read when Serve's processes start, so it must be set before a local Ray starts;
    # on a cluster set it in the nodes' environment (`RAY_SERVE_THROUGHPUT_OPTIMIZED=1 ray start`).
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    if serve_haproxy:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    ctx: Any
    if addr:
        ctx = ray.init(address=addr, **opts)
    else:
        ctx = ray.init(num_cpus=num_cpus, include_dashboard=True, **opts)
    url = getattr(ctx, "dashboard_url", "") or ""
    return f"http://{url}" if url and not url.startswith("http") else str(url)


def wait_for_stop_signal() -> None:
    """Block until SIGTERM or Ctrl-C (SIGINT), for commands that serve until stopped."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
