"""The process around a stage: connecting to Ray (local or a cluster) and waiting for Ctrl-C.

A command starts its own local Ray unless it is told to join a cluster (``--ray-address`` or
``RAY_ADDRESS``). It never joins a cluster on its own: Ray's default would read the address a
``ray start`` left in ``/tmp/ray/ray_current_cluster``, and a killed cluster leaves that file
behind, so ``ray.init()`` would wait minutes on "Failed to connect to GCS". A cluster it is
told to join must accept a TCP connection within seconds, else :class:`RayUnreachable`.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray_app.errors import UserError
from ray_app.paths import HOME_ENV

ADDRESS_ENV = "RAY_ADDRESS"
ROOT_FLAGS = ("--debug", "--verbose", "-v")
"""Options of the ``ray-app`` root, which must come before the command."""
CONNECT_TIMEOUT_S = 3.0
"""How long the cluster's GCS (or Ray client server) has to accept a TCP connection."""


class RayUnreachable(UserError):
    """The Ray cluster to join does not answer, or its address is not one ``ray.init`` takes."""


def cluster_address(address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``; None (or ``local``): a local Ray."""
    addr = (address or os.environ.get(ADDRESS_ENV) or "").strip()
    return None if addr in ("", "local") else addr


def _source(address: str | None) -> str:
    return "--ray-address" if address else ADDRESS_ENV


def _auto_address(source: str) -> str:
    """What ``auto`` means to Ray: the cluster the last ``ray start`` on this machine recorded."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    try:
        return str(canonicalize_bootstrap_address_or_die("auto"))
    except ConnectionError as exc:
        raise RayUnreachable(
            f"{source}=auto found no Ray cluster on this machine ({' '.join(str(exc).split())}): "
            "start one with `ray start --head`, or drop the address to use a local Ray"
        ) from None


def host_port(address: str, source: str = "--ray-address") -> tuple[str, int]:
    """``(host, port)`` to probe for a ``ray.init`` address (``HOST:PORT`` or
    ``ray://HOST:PORT``); :class:`RayUnreachable` naming the fix for anything else."""
    text = address.removeprefix("ray://")
    if "://" in text:
        raise RayUnreachable(
            f"{source}={address} is not a Ray cluster address: an http:// URL is the dashboard "
            "(for `ray job submit --address`); join a cluster with its GCS address HOST:6379 "
            "or its Ray client address ray://HOST:10001"
        )
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnreachable(
            f"{source}={address} is not HOST:PORT: use the head's GCS address, e.g. HEAD:6379, "
            "or ray://HEAD:10001"
        )
    return host.strip("[]"), int(port)


def check_cluster(
    address: str, source: str = "--ray-address", timeout_s: float = CONNECT_TIMEOUT_S
) -> str:
    """The address to join (``auto`` resolved as Ray would) once its host accepted a TCP
    connection within ``timeout_s``; else :class:`RayUnreachable` naming the address."""
    addr = _auto_address(source) if address == "auto" else address
    host, port = host_port(addr, source)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise RayUnreachable(
            f"the Ray cluster at {addr} ({source}) does not answer ({reason} within "
            f"{timeout_s:g}s): start it with `ray start --head`, fix the address, or drop "
            f"{source} to use a local Ray"
        ) from None
    return addr


def init_ray(
    address: str | None = None,
    num_cpus: int | None = None,
    *,
    serve_haproxy: bool = False,
    **kwargs: Any,
) -> str:
    """``ray.init`` once; returns the dashboard URL (empty if the dashboard is off).

    ``address`` (or ``RAY_ADDRESS``, which ``ray job submit`` sets for a job's driver) joins an
    existing cluster after :func:`check_cluster`; otherwise a new local Ray starts, whatever
    cluster files an earlier ``ray start`` left behind. Ray 2.60 clusters started with
    ``ray start`` use token auth: clients need ``RAY_AUTH_MODE=token`` (the token lives in
    ``~/.ray/auth_token``, or ``RAY_AUTH_TOKEN``).

    ``serve_haproxy`` starts a local Ray whose Serve puts HAProxy (bundled with ``ray[serve]``)
    in front of the ingress replicas instead of the Python proxy actor; BENCHMARKS.md
    ("Serving under load") has what it changes. Serve then binds replica ports on all
    interfaces so HAProxy on other nodes can reach them, which is why it is opt-in on a laptop.
    On a cluster set ``RAY_SERVE_ENABLE_HA_PROXY=1`` in the nodes' environment instead.
    """
    import ray

    if ray.is_initialized():
        return str(getattr(ray.get_runtime_context(), "dashboard_url", "") or "")
    addr = cluster_address(address)
    if addr:
        addr = check_cluster(addr, _source(address))
    opts: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, **kwargs}
    # Ray Serve's throughput-optimised mode (gRPC between deployments, direct ingress, no
    # per-request log lines) is what the serving figures in BENCHMARKS.md were measured with.
    # It is read when Serve's processes start, so it must be set before a local Ray starts;
    # on a cluster set it in the nodes' environment (`RAY_SERVE_THROUGHPUT_OPTIMIZED=1 ray start`).
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # HAProxy's own limits: a connection idle (or a request half-sent) for 30 s is closed
    # (Ray's default is an hour), at most 4,096 connections per node. The Python proxy has no
    # such settings; serve_config.yaml's http_options bound its keep-alive and request time.
    os.environ.setdefault("RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S", "30")
    os.environ.setdefault("RAY_SERVE_HAPROXY_MAXCONN", "4096")
    if serve_haproxy:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    ctx: Any
    if addr:
        ctx = ray.init(address=addr, **opts)
    else:
        opts.setdefault("include_dashboard", True)
        ctx = ray.init(address="local", num_cpus=num_cpus, **opts)
    url = getattr(ctx, "dashboard_url", "") or ""
    return f"http://{url}" if url and not url.startswith("http") else str(url)


def where_this_runs() -> str:
    """This node and what relative locations resolve against, for "not found" messages: a
    job's paths resolve where the job runs, not where it was submitted."""
    home = os.environ.get(HOME_ENV)
    base = (
        f"{HOME_ENV}={home}"
        if home
        else f"{HOME_ENV} unset, so relative paths resolve against {Path.cwd()}"
    )
    return f"on node {platform.node()} ({base})"


def job_argv(command: str, argv: Sequence[str]) -> list[str]:
    """The ``ray-app`` arguments of ``python jobs/<command>.py ARGS`` (a ``ray job submit``
    entrypoint): ``command`` with ARGS, the root's flags (``--debug``) moved before it."""
    root = [a for a in argv if a in ROOT_FLAGS]
    return [*root, command, *(a for a in argv if a not in ROOT_FLAGS)]


@contextmanager
def located_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Errors of ``kinds`` (default: :class:`UserError`) raised in the block become one
    :class:`UserError` line ending in :func:`where_this_runs`, for checks of locations that
    may exist where the user looked but not where the command runs (a Ray job's node)."""
    catch: tuple[type[Exception], ...] = kinds or (UserError,)
    try:
        yield
    except catch as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"{text}; looked {where_this_runs()}") from exc


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
