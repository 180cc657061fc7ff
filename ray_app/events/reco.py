"""Reco events as the service writes them: the one builder, and the ``server`` field's
``<variant>@<model>:<version>`` format with its parser.

Every answer the serving app gives becomes a :class:`~ray_app.events.model.RecoEvent` through
:func:`served_reco_event`; the simulator builds its lines with the same function, so the
server field is formatted here and nowhere else, and :func:`parse_server_column` is its only
reader.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd

from ray_app.events.model import RecoEvent

_SERVER_RE = r"^(?P<variant>[^@]*)@(?P<model>[^:]*):(?P<version>.*)$"
# The line dialect separates fields with commas and refuses whitespace or control characters
# in the server field, so a variant named "my slot" must not make a reco line unwritable.
_RESERVED = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
UNKNOWN = "unknown"


def format_server(variant: str | None, model: str | None, version: str | None) -> str:
    """``<variant>@<model>:<version>``; missing parts become ``unknown``, commas ``;`` and
    whitespace or control characters ``_``."""
    text = f"{variant or UNKNOWN}@{model or UNKNOWN}:{version or UNKNOWN}"
    return _RESERVED.sub("_", text.replace(",", ";"))


def parse_server_column(server: pd.Series) -> pd.DataFrame:
    """Inverse of :func:`format_server` over a column: a frame with ``variant``, ``model`` and
    ``version`` (same index). Missing or empty parts are ``unknown``; a plain server name is
    the variant (model and version ``unknown``), as in logs from servers without A/B slots."""
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
