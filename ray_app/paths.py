"""Where data lives: relative paths in configs and flags resolve against ``RAY_APP_HOME``.

A Ray job runs in a copy of its ``--working-dir`` and a Serve replica in a directory of Ray's
choosing, so a relative path such as ``data/demo/snapshots`` would silently point somewhere
else there. Every stage resolves its locations with :func:`resolve_location`: URIs
(``s3://…``, ``file://…``) and absolute paths are used as given, and relative paths are
joined to ``RAY_APP_HOME`` (a path or URI; the current directory when unset). Setting
``RAY_APP_HOME`` in a job's ``runtime_env`` (or the nodes' environment for ``serve deploy``)
makes the shipped configs work unchanged on a cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "RAY_APP_HOME"


def is_uri(location: str | Path) -> bool:
    """True for ``scheme://…`` locations (object stores, ``file://``)."""
    return "://" in str(location)


def home() -> str:
    """``RAY_APP_HOME`` (a path or URI), else the current directory."""
    return os.environ.get(HOME_ENV) or str(Path.cwd())


def resolve_location(location: str | Path) -> str:
    """``location`` as an absolute path or a URI: relative paths join :func:`home`."""
    text = str(location)
    if is_uri(text) or Path(text).is_absolute():
        return text
    base = home()
    if is_uri(base):
        return f"{base.rstrip('/')}/{Path(text).as_posix()}"
    return str((Path(base) / text).resolve())
