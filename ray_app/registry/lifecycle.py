"""A registry version's lifecycle log, kept beside (not inside) the signed version directory.

A version's manifest is signed and therefore immutable; what happens to the version later
(gated, canaried, promoted, rolled back) is appended to
``<root>/<model>/_lifecycle/<version>.jsonl``, a plain file a person can open. The model's
current production version is an alias kept by :meth:`Registry.set_alias`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import pyarrow.fs as pafs

from ray_app.registry.binding import check_component
from ray_app.registry.store import Registry

LIFECYCLE_DIR = "_lifecycle"


def lifecycle_event(step: str, **details: Any) -> dict[str, Any]:
    """One lifecycle event, stamped with the current UTC time: ``{"ts", "step", **details}``."""
    return {"ts": dt.datetime.now(dt.UTC).isoformat(), "step": step, **details}


def _log_path(reg: Registry, name: str, version: str) -> str:
    # Both become path components: refuse anything that could leave the model's directory.
    check_component("model name", name)
    check_component("version", version)
    return reg.path(name, LIFECYCLE_DIR, f"{version}.jsonl")


def append_events(
    reg: Registry, name: str, version: str, new_events: Iterable[dict[str, Any]]
) -> None:
    """Append events (each with its own ``ts``, kept as given) to ``name``/``version``'s log."""
    lines = b"".join((json.dumps(e, sort_keys=True) + "\n").encode() for e in new_events)
    if not lines:
        return
    reg.fs.create_dir(reg.path(name, LIFECYCLE_DIR), recursive=True)
    path = _log_path(reg, name, version)
    old = b""
    if reg.fs.get_file_info(path).type == pafs.FileType.File:
        with reg.fs.open_input_stream(path) as fh:
            old = fh.read()
    # Object stores have no append: rewrite the (small) file whole.
    with reg.fs.open_output_stream(path) as fh:
        fh.write(old + lines)


def events(reg: Registry, name: str, version: str) -> list[dict[str, Any]]:
    """Every lifecycle event of a version, oldest first."""
    path = _log_path(reg, name, version)
    if reg.fs.get_file_info(path).type != pafs.FileType.File:
        return []
    with reg.fs.open_input_stream(path) as fh:
        return [json.loads(line) for line in fh.read().decode().splitlines() if line.strip()]
