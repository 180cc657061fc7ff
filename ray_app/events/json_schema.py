"""JSON Schemas of the JSON-dialect topics: generated from the wire records, published with
their history, and written out for a broker or a schema registry.

Each kind's schema is generated from its model in :mod:`ray_app.events.records`. Published
versions are immutable files in this package, ``schemas/<kind>/v<N>.json`` (JSON Schema
2020-12, the record itself); the latest one of each kind is what the embedded broker enforces
and what ``ray-app schemas export`` writes. CI checks that the history is additive only
(:mod:`ray_app.events.schema_compat`) and that the generated schemas equal the latest published
ones, so a changed wire model cannot ship unpublished: ``ray-app schemas publish`` appends the
new versions once they pass the additive-only check.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final, Literal

from ray_app.errors import UserError
from ray_app.events.json_dialect import DEFAULT_PREFIX, JSON_KINDS, topic_for
from ray_app.events.records import WIRE_RECORDS
from ray_app.events.schema_compat import additive_problems, history_problems

PUBLISHED_DIR: Final = Path(__file__).with_name("schemas")
"""Where the published versions live (package data)."""
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
ExportFormat = Literal["registry", "tansu"]
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.json$")


class SchemaPublishError(UserError):
    """The generated schemas cannot be published as they are (not an additive change)."""


def generate(kind: str) -> dict[str, Any]:
    """The JSON Schema of a ``kind`` record, generated from its wire model."""
    schema = WIRE_RECORDS[kind].model_json_schema()
    if "$defs" in schema:
        # A broker embeds the record schema under another one (tansu_schema), where "#/$defs"
        # references would point at the wrong root.
        raise TypeError(f"the wire model of {kind!r} must not nest models ($defs)")
    for prop in schema["properties"].values():
        prop.pop("title", None)  # "User Id" for user_id: noise for a reader of the schema
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def published_versions(kind: str, root: Path = PUBLISHED_DIR) -> dict[int, dict[str, Any]]:
    """Every published version of a ``kind``'s schema, by version number (oldest first)."""
    found: dict[int, dict[str, Any]] = {}
    folder = root / kind
    for path in folder.glob("v*.json") if folder.is_dir() else ():
        match = _VERSION_FILE.match(path.name)
        if match:
            found[int(match.group(1))] = json.loads(path.read_text(encoding="utf-8"))
    return dict(sorted(found.items()))


def latest_published(kind: str, root: Path = PUBLISHED_DIR) -> tuple[int, dict[str, Any]]:
    """``(version, schema)`` of the newest published version of a ``kind``'s schema."""
    versions = published_versions(kind, root)
    if not versions:
        raise UserError(
            f"no published schema for {kind!r} under {root / kind}: run `ray-app schemas publish`"
        )
    version = max(versions)
    return version, versions[version]


def topic_schemas(prefix: str = DEFAULT_PREFIX, root: Path = PUBLISHED_DIR) -> dict[str, Any]:
    """The latest published record schema of each JSON topic under ``prefix``, by topic."""
    return {topic_for(prefix, kind): latest_published(kind, root)[1] for kind in JSON_KINDS}


def tansu_schema(record_schema: dict[str, Any]) -> dict[str, Any]:
    """``record_schema`` as Tansu's ``<topic>.json`` wants it: Tansu validates each record as
    an object whose ``value`` property is the record's value, so the record schema goes there
    (and a record without a value is refused, as the consumer would dead-letter it)."""
    value = {k: v for k, v in record_schema.items() if k != "$schema"}
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"{value.get('title', 'record')} (Kafka record)",
        "type": "object",
        "properties": {"value": value},
        "required": ["value"],
    }


def _dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(
    out: Path,
    prefix: str = DEFAULT_PREFIX,
    fmt: ExportFormat = "registry",
    root: Path = PUBLISHED_DIR,
) -> list[Path]:
    """Write the latest schema of each JSON topic under ``prefix`` into ``out``.

    ``registry``: ``<topic>-value.json``, the record schema, to register under that subject
    (Confluent's topic-name strategy). ``tansu``: ``<topic>.json`` for Tansu's
    ``--schema-registry file://DIR``, which refuses records that do not match.
    """
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for topic, schema in topic_schemas(prefix, root).items():
        if fmt == "tansu":
            path, body = out / f"{topic}.json", tansu_schema(schema)
        else:
            path, body = out / f"{topic}-value.json", schema
        path.write_text(_dump(body), encoding="utf-8")
        written.append(path)
    return written


def _topic(kind: str) -> str:
    return topic_for(DEFAULT_PREFIX, kind)


def check_published(root: Path = PUBLISHED_DIR) -> list[str]:
    """Problems with the published schemas, one line each (empty: all good): a history that is
    not additive only, or a wire model whose generated schema is not the latest published."""
    problems: list[str] = []
    for kind in JSON_KINDS:
        versions = published_versions(kind, root)
        if not versions:
            problems.append(f"{_topic(kind)}: no published schema; run `ray-app schemas publish`")
            continue
        problems += history_problems(_topic(kind), versions)
        latest = max(versions)
        if generate(kind) != versions[latest]:
            problems.append(
                f"{_topic(kind)}: the wire model in ray_app/events/records.py differs from the "
                f"published v{latest}; run `ray-app schemas publish` to add v{latest + 1}"
            )
    return problems


def publish(root: Path = PUBLISHED_DIR) -> list[tuple[str, int]]:
    """Append a new version for each kind whose generated schema differs from its latest
    published one; ``(kind, version)`` of each file written.

    Nothing is written unless every new version is an additive successor; otherwise
    :class:`SchemaPublishError` names the problems.
    """
    pending: list[tuple[str, int, dict[str, Any]]] = []
    problems: list[str] = []
    for kind in JSON_KINDS:
        schema = generate(kind)
        versions = published_versions(kind, root)
        latest = max(versions, default=0)
        if latest and versions[latest] == schema:
            continue
        if latest:
            problems += additive_problems(
                _topic(kind), versions[latest], schema, old_version=latest, new_version=latest + 1
            )
        pending.append((kind, latest + 1, schema))
    if problems:
        raise SchemaPublishError("; ".join(problems))
    for kind, version, schema in pending:
        (root / kind).mkdir(parents=True, exist_ok=True)
        (root / kind / f"v{version}.json").write_text(_dump(schema), encoding="utf-8")
    return [(kind, version) for kind, version, _ in pending]
