"""A registry version's lifecycle log, kept beside (not inside) the signed version directory.

A version's manifest is signed and therefore immutable; what happens to the version later
(gated, canaried, promoted, rolled back) is appended to ``<root>/<model>/_lifecycle/<version>.jsonl``,
a plain file a person can open. The model's current production version is an alias kept by
:meth:`Registry.set_alias` in ``<root>/<model>/_aliases.json``.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from ray_app.registry.store import Registry


def _path(reg: Registry, *parts: str) -> str:
    return "/".join([reg.base.rstrip("/"), *parts])


def log_event(reg: Registry, name: str, version: str, step: str, **details: Any) -> dict[str, Any]:
    """Append one lifecycle event (UTC timestamped) for ``name``/``version``."""
    event = {"ts": dt.datetime.now(dt.UTC).isoformat(), "step": step, **details}
    reg.fs.create_dir(_path(reg, name, "_lifecycle"), recursive=True)
    path = _path(reg, name, "_lifecycle", f"{version}.jsonl")
    old = b""
    if reg.fs.get_file_info(path).type == pafs.FileType.File:
        with reg.fs.open_input_stream(path) as fh:
            old = fh.read()
    # object stores have no append: rewrite the (small) file whole
    with reg.fs.open_output_stream(path) as fh:
        fh.write(old + (json.dumps(event, sort_keys=True) + "\n").encode())
    return event


def events(reg: Registry, name: str, version: str) -> list[dict[str, Any]]:
    """Every lifecycle event of a version, oldest first."""
    path = _path(reg, name, "_lifecycle", f"{version}.jsonl")
    if reg.fs.get_file_info(path).type != pafs.FileType.File:
        return []
    with reg.fs.open_input_stream(path) as fh:
        return [json.loads(line) for line in fh.read().decode().splitlines() if line.strip()]


def local_root(reg: Registry) -> Path | None:
    """The registry's directory when it is on the local filesystem."""
    return Path(reg.base) if isinstance(reg.fs, pafs.LocalFileSystem) else None
