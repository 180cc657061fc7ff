"""Event dialects (line and JSON), their versioned Arrow schema, and vectorised parsers."""

from ray_app.events.batch import ParsedBatch
from ray_app.events.json_dialect import (
    JSON_KINDS,
    format_json,
    json_kind_of,
    kind_for_topic,
    parse_json,
    parse_json_batch,
    topic_for,
)
from ray_app.events.line_dialect import DEFAULT_TOPIC, format_line, parse_line, parse_line_batch
from ray_app.events.model import (
    Event,
    ParseError,
    RateEvent,
    RecoEvent,
    ValidationRules,
    WatchEvent,
    event_from_row,
    events_from_table,
)
from ray_app.events.schema import (
    DEAD_LETTER_SCHEMA,
    SNAPSHOT_SCHEMA,
    SNAPSHOT_SCHEMA_VERSION,
    SNAPSHOT_SCHEMAS,
)

__all__ = [
    "DEAD_LETTER_SCHEMA",
    "DEFAULT_TOPIC",
    "JSON_KINDS",
    "SNAPSHOT_SCHEMA",
    "SNAPSHOT_SCHEMAS",
    "SNAPSHOT_SCHEMA_VERSION",
    "Event",
    "ParseError",
    "ParsedBatch",
    "RateEvent",
    "RecoEvent",
    "ValidationRules",
    "WatchEvent",
    "event_from_row",
    "events_from_table",
    "format_json",
    "format_line",
    "json_kind_of",
    "kind_for_topic",
    "parse_json",
    "parse_json_batch",
    "parse_line",
    "parse_line_batch",
    "topic_for",
]
