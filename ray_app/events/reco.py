"""Reco events as the service writes them: the one builder, and the ``server`` field's
``<variant>@<model>:<version>`` format with its parser.

Every answer the serving app gives becomes a :class:`~ray_app.events.model.RecoEvent` through
:func:`served_reco_event`; the simulator builds its lines with the same function, so the
server field is formatted here and nowhere else, and :func:`parse_server` /
:func:`parse_server_column` are the only readers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from ray_app.events.model import RecoEvent

_SERVER_RE = r"^(?P<variant>[^@]*)@(?P<model>[^:]*):(?P<version>.*)$"
_SERVER = re.compile(_SERVER_RE)
# The line dialect separates result items with commas; none may appear inside the field.
_RESERVED = str.maketrans({",": ";"})
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ServerRef:
    """What served a list: A/B slot, registry model name and version."""

    variant: str
    model: str
    version: str


def format_server(variant: str | None, model: str | None, version: str | None) -> str:
    """``<variant>@<model>:<version>``; missing parts become ``unknown``."""
    text = f"{variant or UNKNOWN}@{model or UNKNOWN}:{version or UNKNOWN}"
    return text.translate(_RESERVED)


def parse_server(text: str | None) -> ServerRef:
    """Inverse of :func:`format_server`; a plain server name is the variant (model and version
    ``unknown``), as in logs from servers that do not run A/B slots."""
    m = _SERVER.match(text or "")
    if m is None:
        return ServerRef(text or UNKNOWN, UNKNOWN, UNKNOWN)
    return ServerRef(m["variant"] or UNKNOWN, m["model"] or UNKNOWN, m["version"] or UNKNOWN)


def parse_server_column(server: pd.Series) -> pd.DataFrame:
    """:func:`parse_server` over a column: a frame with ``variant``, ``model``, ``version``."""
    s = server.fillna("").astype(str)
    parts = s.str.extract(_SERVER_RE)
    plain = parts["variant"].isna()
    parts.loc[plain, "variant"] = s[plain]
    return parts.fillna(UNKNOWN).replace("", UNKNOWN)


def served_reco_event(
    *,
    user_id: str,
    items: Sequence[str],
    variant: str | None,
    model: str | None,
    version: str | None,
    latency_ms: float,
    request_id: str | None = None,
    status: int = 200,
    ts: datetime | None = None,
) -> RecoEvent:
    """The reco event for one answer: what Kafka receives and what online evaluation joins."""
    return RecoEvent(
        ts=ts or datetime.now(UTC),
        user_id=user_id,
        server=format_server(variant, model, version),
        status=status,
        items=list(items),
        latency_ms=round(float(latency_ms), 3),
        request_id=request_id,
        ab_variant=variant,
        model_version=version,
    )
