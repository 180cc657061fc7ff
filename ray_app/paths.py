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
from pathlib import Path, PurePath
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator

HOME_ENV = "RAY_APP_HOME"


def _as_text(value: Any) -> Any:
    # Kept as text: Path("s3://b/p") would collapse the URI to "s3:/b/p".
    return os.fspath(value) if isinstance(value, PurePath) else value


Location = Annotated[str, BeforeValidator(_as_text)]
"""A config field holding a path or URI (``Path`` values accepted), resolved when used with
:func:`resolve_location`."""


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
        # The relative part joins the URI's path, before any query (s3://b/p?endpoint=…).
        parts = urlsplit(base)
        path = f"{parts.path.rstrip('/')}/{Path(text).as_posix()}"
        return urlunsplit(parts._replace(path=path))
    return str((Path(base) / text).resolve())
