"""One entry point for both dialects, for consumers configured with a dialect name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyarrow as pa

from ray_app.events.batch import ParsedBatch
from ray_app.events.json_dialect import JSON_KINDS, parse_json_batch
from ray_app.events.line_dialect import parse_line_batch
from ray_app.events.model import ValidationRules

Dialect = Literal["line", "json"]


def parse_batch(
    dialect: Dialect,
    values: Sequence[bytes | None] | pa.Array,
    *,
    topic: str,
    partitions: Sequence[int] | int,
    offsets: Sequence[int],
    rules: ValidationRules = ValidationRules(),
    kind: str | None = None,
) -> ParsedBatch:
    """Parse a batch in either dialect (see :func:`parse_line_batch`, :func:`parse_json_batch`).

    For ``"json"``, ``kind`` defaults to the topic's last dot-separated part, so
    ``events.reco_responses`` is read as ``reco_responses``; ``kind`` is ignored for ``"line"``.
    """
    if dialect == "line":
        return parse_line_batch(
            values, topic=topic, partitions=partitions, offsets=offsets, rules=rules
        )
    if dialect == "json":
        if kind is None:
            kind = topic.rsplit(".", 1)[-1]
            if kind not in JSON_KINDS:
                raise ValueError(
                    f"cannot tell the JSON kind of topic {topic!r}: its suffix {kind!r} is not "
                    f"one of {list(JSON_KINDS)}; pass kind= explicitly"
                )
        return parse_json_batch(
            values, kind=kind, topic=topic, partitions=partitions, offsets=offsets, rules=rules
        )
    raise ValueError(f"unknown event dialect {dialect!r}; expected 'line' or 'json'")
