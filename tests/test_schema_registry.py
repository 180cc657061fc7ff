"""The schema registry: JSON Schemas generated from the wire records, published with an
additive-only history, enforced by the embedded broker, with the consumer's dead letters still
guarding brokers that do not validate."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow.parquet as pq
import pytest
from helpers import wait_until
from hypothesis import given
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import InvalidRecordError
from test_events_properties import SETTINGS, events, served_events
from typer.testing import CliRunner

from ray_app.broker.embedded import EmbeddedBroker, ensure_topics
from ray_app.broker.settings import KafkaSettings
from ray_app.cli import app
from ray_app.events.json_dialect import (
    JSON_KINDS,
    _read_schema,
    format_json,
    json_kind_of,
    parse_json_batch,
    topic_for,
)
from ray_app.events.json_schema import (
    PUBLISHED_DIR,
    SchemaPublishError,
    check_published,
    generate,
    latest_published,
    publish,
    published_versions,
    tansu_schema,
    write_schemas,
)
from ray_app.events.model import Event, RecoEvent
from ray_app.events.reco import served_reco_event
from ray_app.events.records import WIRE_RECORDS, optional_fields, required_fields
from ray_app.events.schema import RECO_PROVENANCE_FIELDS
from ray_app.events.schema_compat import additive_problems, history_problems
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.run import run_ingest
from ray_app.serving.provenance import RecoLogger

# One record of each kind that the dialect accepts, in the forms producers send.
VALID: dict[str, dict[str, Any]] = {
    "watch": {"ts": 1730000000, "user_id": 7, "movie_id": 42, "minute": 3},
    "rate": {"ts": "2024-03-01T00:00:00Z", "user_id": "7", "movie_id": "up+2009", "rating": 4.5},
    "reco_requests": {"ts": 1730000000.25, "user_id": 7, "server": "A@ease:v1"},
    "reco_responses": {
        "ts": 1730000000,
        "user_id": 7,
        "server": "A@ease:v1",
        "status": 200,
        "items": [1, "m2"],
        "latency_ms": 12.5,
        "request_id": "r-1",
        "ab_variant": "A",
        "model_version": "v1",
    },
}


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = latest_published(kind)[1]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _schema_accepts(kind: str, record: dict[str, Any]) -> bool:
    return _validator(kind).is_valid(record)


def _dialect_dead_letters(kind: str, record: dict[str, Any]) -> str | None:
    """The dead-letter reason the JSON dialect gives ``record`` (None: it is accepted)."""
    raw = json.dumps(record).encode()
    batch = parse_json_batch([raw], kind=kind, topic=f"events.{kind}", partitions=0, offsets=[0])
    return batch.dead.column("error")[0].as_py() if batch.dead.num_rows else None


# -- generated, published, consistent with the dialect ---------------------------------------


def test_one_wire_model_per_kind_and_the_dialect_reads_its_fields() -> None:
    assert tuple(WIRE_RECORDS) == JSON_KINDS
    for kind in JSON_KINDS:
        fields = required_fields(kind) + optional_fields(kind)
        assert _read_schema(kind).names == list(fields)
        assert list(generate(kind)["properties"]) == list(fields)
        assert generate(kind)["required"] == list(required_fields(kind))
    # snapshot schema v2's reco fields are the optional wire fields of reco responses
    assert optional_fields("reco_responses") == RECO_PROVENANCE_FIELDS


def test_the_generated_schemas_are_the_latest_published() -> None:
    for kind in JSON_KINDS:
        version, schema = latest_published(kind)
        assert generate(kind) == schema, f"{kind} v{version}: run `ray-app schemas publish`"
    assert check_published() == []


def test_the_published_history_is_additive_and_shows_reco_v1_and_v2() -> None:
    for kind in JSON_KINDS:
        assert history_problems(f"events.{kind}", published_versions(kind)) == []
    reco = published_versions("reco_responses")
    assert sorted(reco) == [1, 2]
    added = set(reco[2]["properties"]) - set(reco[1]["properties"])
    assert added == set(RECO_PROVENANCE_FIELDS)
    assert not added & set(reco[2]["required"]), "v2's fields are optional"
    # a v1 record (no provenance) still validates against v2, and the dialect reads it
    v1_record = {k: v for k, v in VALID["reco_responses"].items() if k not in added}
    assert _schema_accepts("reco_responses", v1_record)
    assert _dialect_dead_letters("reco_responses", v1_record) is None


def test_every_published_file_is_package_data() -> None:
    """A pip-installed package (not only this checkout) must carry the schemas."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["ray_app"]
    package = PUBLISHED_DIR.parents[1]
    files = [p.relative_to(package).as_posix() for p in PUBLISHED_DIR.rglob("*") if p.is_file()]
    assert len(files) == len(JSON_KINDS) + 1  # reco_responses has v1 and v2
    assert [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)] == []


@SETTINGS
@given(st.one_of(events, served_events))
def test_format_json_output_validates_for_every_kind(event: Event) -> None:
    record = json.loads(format_json(event))
    errors = [e.message for e in _validator(json_kind_of(event)).iter_errors(record)]
    assert errors == []


@pytest.mark.parametrize("kind", JSON_KINDS)
def test_records_the_dialect_accepts_validate(kind: str) -> None:
    base = VALID[kind]
    variants = [
        base,
        {**base, "extra_field": {"any": ["thing"]}},  # unknown fields: ignored, additive
        {k: str(v) if isinstance(v, int | float) else v for k, v in base.items()},  # as text
        {**base, "ts": "2024-03-01 10:11:12.123456789+02:00"},
        {**base, "ts": 1.73e9},
        {**base, "ts": "-1.5"},
        {**base, **{name: None for name in optional_fields(kind)}},  # null = absent
        {k: v for k, v in base.items() if k in required_fields(kind)},
    ]
    for record in variants:
        assert _dialect_dead_letters(kind, record) is None, record
        assert _schema_accepts(kind, record), record


_MISTYPED: list[Any] = [True, {"a": 1}, [1], None]
_MISTYPED_LIST: list[Any] = [True, "1,2", {"a": 1}, None, [None], [True], [{"a": 1}], [[1]]]


def _broken_records(kind: str) -> list[tuple[str, dict[str, Any]]]:
    base = VALID[kind]
    out: list[tuple[str, dict[str, Any]]] = []
    for name in required_fields(kind):
        out.append((f"missing {name}", {k: v for k, v in base.items() if k != name}))
    for name in required_fields(kind) + optional_fields(kind):
        optional = name in optional_fields(kind)
        for bad in _MISTYPED_LIST if name == "items" else _MISTYPED:
            if not (optional and bad is None):
                out.append((f"{name}={bad!r}", {**base, name: bad}))
    return out


@pytest.mark.parametrize("kind", JSON_KINDS)
def test_records_the_dialect_dead_letters_for_a_missing_or_mistyped_field_are_refused(
    kind: str,
) -> None:
    cases = _broken_records(kind)
    assert len(cases) >= 3 * len(required_fields(kind))
    for what, record in cases:
        assert _dialect_dead_letters(kind, record), f"{kind} {what}: the dialect accepted it"
        assert not _schema_accepts(kind, record), f"{kind} {what}: the schema accepted it"


@pytest.mark.parametrize(
    ("kind", "change"),
    [
        ("watch", {"minute": -1}),
        ("watch", {"minute": "3.5"}),
        ("watch", {"user_id": ""}),
        ("watch", {"movie_id": ""}),
        ("watch", {"ts": "yesterday"}),
        ("watch", {"ts": ""}),
        ("rate", {"rating": "four"}),
        ("reco_requests", {"server": ""}),
        ("reco_responses", {"status": 1000}),
        ("reco_responses", {"latency_ms": -1}),
        ("reco_responses", {"items": [""]}),
        ("reco_responses", {"server": ""}),
    ],
)
def test_values_every_consumer_refuses_are_refused_by_the_schema(
    kind: str, change: dict[str, Any]
) -> None:
    record = {**VALID[kind], **change}
    assert _dialect_dead_letters(kind, record)
    assert not _schema_accepts(kind, record)


# -- the additive-only checker ---------------------------------------------------------------

V1, V2 = published_versions("reco_responses")[1], published_versions("reco_responses")[2]


def _variant(
    schema: dict[str, Any],
    *,
    drop: tuple[str, ...] = (),
    add: dict[str, Any] | None = None,
    required: list[str] | None = None,
    **keywords: Any,
) -> dict[str, Any]:
    """A copy of ``schema`` without the ``drop`` properties, with ``add`` ones, another
    ``required`` list and other record keywords."""
    out = copy.deepcopy(schema)
    for name in drop:
        del out["properties"][name]
    out["properties"].update(add or {})
    out["required"] = (
        [r for r in out["required"] if r not in drop] if required is None else required
    )
    out.update(keywords)
    return out


REQUIRED_V2: list[str] = V2["required"]


@pytest.mark.parametrize(
    ("new", "field", "rule"),
    [
        (_variant(V2, drop=("latency_ms",)), "latency_ms", "never removed"),
        (_variant(V2, add={"status": {"type": "string"}}), "status", "keeps its type"),
        (
            _variant(V2, required=[*REQUIRED_V2, "request_id"]),
            "request_id",
            "only optional fields",
        ),
        (
            _variant(V2, required=[r for r in REQUIRED_V2 if r != "items"]),
            "items",
            "rely on it",
        ),
        (
            _variant(V2, add={"shard": {"type": "integer"}}, required=[*REQUIRED_V2, "shard"]),
            "shard",
            "new fields must be optional",
        ),
        (
            _variant(V2, additionalProperties=False),
            "additionalProperties",
            "only add optional fields",
        ),
    ],
    ids=["removed", "retyped", "made-required", "made-optional", "new-required", "closed"],
)
def test_the_checker_refuses_breaking_changes_naming_topic_field_and_rule(
    new: dict[str, Any], field: str, rule: str
) -> None:
    problems = additive_problems("events.reco_responses", V2, new, old_version=2, new_version=3)
    assert len(problems) == 1, problems
    assert problems[0].startswith("events.reco_responses v2→v3: ")
    assert repr(field) in problems[0] and rule in problems[0]


def test_the_checker_accepts_new_optional_fields_and_annotation_changes() -> None:
    assert additive_problems("t", V1, V2, old_version=1, new_version=2) == []
    status = {**V2["properties"]["status"], "description": "changed", "title": "S"}
    described = _variant(V2, add={"status": status}, title="renamed")
    assert additive_problems("t", V2, described, old_version=2, new_version=3) == []
    # a property called "title" is a field, not an annotation
    titled = _variant(V2, add={"title": {"type": "string"}})
    problems = additive_problems("t", titled, V2, old_version=1, new_version=2)
    assert len(problems) == 1 and "'title' was removed" in problems[0]


def test_the_checker_needs_versions_without_gaps() -> None:
    assert "without gaps" in history_problems("events.watch", {1: V1, 3: V2})[0]
    problems = history_problems("events.x", {1: V2, 2: V1})
    assert {p.split(": field ")[1].split(" ")[0] for p in problems} == {
        repr(f) for f in RECO_PROVENANCE_FIELDS
    }


def test_publish_appends_a_version_only_for_an_additive_change(tmp_path: Path) -> None:
    shutil.copytree(PUBLISHED_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "reco_responses" / "v2.json").unlink()
    assert publish(tmp_path) == [("reco_responses", 2)]
    assert published_versions("reco_responses", tmp_path)[2] == generate("reco_responses")
    assert publish(tmp_path) == [], "nothing changed: nothing published"
    assert check_published(tmp_path) == []

    # a published v2 with a field the model lacks: the model's schema would remove it
    extra = _variant(V2, add={"shard": {"type": "integer"}})
    (tmp_path / "reco_responses" / "v2.json").write_text(json.dumps(extra))
    with pytest.raises(SchemaPublishError, match=r"events\.reco_responses v2→v3: field 'shard'"):
        publish(tmp_path)
    assert not (tmp_path / "reco_responses" / "v3.json").exists()
    assert any("differs from the published v2" in p for p in check_published(tmp_path))


# -- export and the command line -------------------------------------------------------------


def test_export_for_a_registry_and_for_tansu(tmp_path: Path) -> None:
    registry = write_schemas(tmp_path / "registry", prefix="ml")
    assert sorted(p.name for p in registry) == sorted(f"ml.{k}-value.json" for k in JSON_KINDS)
    assert json.loads((tmp_path / "registry" / "ml.watch-value.json").read_text()) == generate(
        "watch"
    )
    tansu = write_schemas(tmp_path / "tansu", fmt="tansu")
    assert sorted(p.name for p in tansu) == sorted(f"events.{k}.json" for k in JSON_KINDS)
    wrapped = json.loads((tmp_path / "tansu" / "events.rate.json").read_text())
    assert wrapped == tansu_schema(generate("rate"))
    validator = jsonschema.Draft202012Validator(wrapped)
    assert validator.is_valid({"value": VALID["rate"]})
    assert not validator.is_valid({"value": {**VALID["rate"], "rating": None}})
    assert not validator.is_valid({"key": "7"}), "a record without a value is refused"


def test_schemas_commands(tmp_path: Path) -> None:
    check = CliRunner().invoke(app, ["schemas", "check"])
    assert check.exit_code == 0, check.output
    assert "reco_responses: v1, v2" in check.output
    out = tmp_path / "out"
    export = CliRunner().invoke(
        app, ["schemas", "export", "--out", str(out), "--prefix", "ml", "--format", "tansu"]
    )
    assert export.exit_code == 0, export.output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"ml.{k}.json" for k in JSON_KINDS)
    shutil.copytree(PUBLISHED_DIR, tmp_path / "pub")
    (tmp_path / "pub" / "watch" / "v1.json").write_text(json.dumps({"type": "object"}))
    refused = CliRunner().invoke(app, ["schemas", "publish", "--dir", str(tmp_path / "pub")])
    assert refused.exit_code == 2
    assert len(refused.output.strip().splitlines()) == 1
    assert refused.output.startswith("error: events.watch v1→v2: new field 'ts' is required")
    assert not (tmp_path / "pub" / "watch" / "v2.json").exists()


# -- the real broker -------------------------------------------------------------------------


def _send(producer: KafkaProducer, topic: str, value: bytes) -> int:
    offset: int = producer.send(topic, value).get(timeout=10).offset
    return offset


def _reco_event(request_id: str | None = None) -> RecoEvent:
    return served_reco_event(
        user_id="7",
        items=["1", "2"],
        variant="A",
        model="ease",
        version="v1",
        latency_ms=3.0,
        request_id=request_id,
    )


INVALID_WATCH = json.dumps({"ts": 1730000000, "user_id": 7, "movie_id": 42}).encode()  # no minute


@pytest.fixture(scope="module")
def own_broker() -> Iterator[str]:
    """An embedded broker with the default settings, as every command starts one, but not the
    session's: these tests fill its ``events.*`` topics, which other tests may read."""
    with EmbeddedBroker() as b:
        yield b.bootstrap_servers


@pytest.mark.integration
def test_the_embedded_broker_refuses_a_record_that_does_not_match(own_broker: str) -> None:
    broker = own_broker
    ensure_topics(broker, {topic_for("events", k): 1 for k in JSON_KINDS})
    producer = KafkaProducer(bootstrap_servers=broker, retries=0)
    try:
        for kind in JSON_KINDS:
            assert _send(producer, topic_for("events", kind), json.dumps(VALID[kind]).encode()) >= 0
        reco = format_json(_reco_event())
        assert _send(producer, "events.reco_responses", reco) >= 0
        with pytest.raises(InvalidRecordError):
            _send(producer, "events.watch", INVALID_WATCH)
        with pytest.raises(InvalidRecordError):
            _send(producer, "events.reco_responses", b"not json")
        # topics outside the prefix are not validated
        assert _send(producer, f"free-{os.getpid()}", INVALID_WATCH) >= 0
    finally:
        producer.close()


@pytest.mark.integration
def test_a_broker_without_schemas_takes_it_and_ingest_dead_letters_it(tmp_path: Path) -> None:
    with EmbeddedBroker(schema_prefix=None) as b:
        ensure_topics(b.bootstrap_servers, {"events.watch": 1})
        producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, retries=0)
        good = json.dumps(VALID["watch"]).encode()
        offsets = [_send(producer, "events.watch", v) for v in (good, INVALID_WATCH, good)]
        producer.close()
        assert offsets == [0, 1, 2], "the broker stored the invalid record"
        config = IngestConfig(
            topics=["events.watch"],
            dialect="json",
            group_id=f"dlq-{os.getpid()}",
            snapshot_dir=str(tmp_path),
            until_idle_s=2,
        )
        stats = run_ingest(KafkaSettings(bootstrap_servers=b.bootstrap_servers), config)
    assert (stats.snapshot_rows, stats.dead_letters) == (2, 1)
    dead = [f for f in tmp_path.rglob("*.parquet") if "dead_letter" in f.parts]
    rows = pq.read_table(dead[0]).to_pylist()
    assert [(r["offset"], r["raw"], r["error"]) for r in rows] == [
        (1, INVALID_WATCH, "missing field 'minute'")
    ]


@pytest.mark.integration
def test_the_schema_prefix_picks_the_validated_topics() -> None:
    with EmbeddedBroker(schema_prefix="ml") as b:
        ensure_topics(b.bootstrap_servers, {"ml.watch": 1, "events.watch": 1})
        producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, retries=0)
        try:
            with pytest.raises(InvalidRecordError):
                _send(producer, "ml.watch", INVALID_WATCH)
            assert _send(producer, "events.watch", INVALID_WATCH) == 0
        finally:
            producer.close()


@pytest.mark.integration
def test_the_reco_logger_counts_refused_records_and_keeps_sending(own_broker: str) -> None:
    broker = own_broker
    ensure_topics(broker, {"events.watch": 1, "events.reco_responses": 1})
    # A reco logger pointed at the watch topic by mistake: every record is refused there.
    wrong = RecoLogger(broker, "events.watch")
    right = RecoLogger(broker, "events.reco_responses")
    marker = f"refusal-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        reco = [_reco_event(f"{marker}-{i}") for i in range(5)]
        for event in reco:
            assert wrong.log(event) and right.log(event)
        wait_until(lambda: wrong.stats()["refused"] == 5, 30, what="5 refusals")
        assert wrong.stats() | {"queued": 0} == {
            "enabled": True,
            "topic": "events.watch",
            "queued": 0,
            "sent": 0,
            "dropped": 5,
            "refused": 5,
        }
        assert wrong._thread is not None and wrong._thread.is_alive(), "it keeps going"
        assert wrong.log(reco[0]), "and keeps accepting events"
        wait_until(lambda: wrong.stats()["refused"] == 6, 30, what="the 6th refusal")
        wait_until(lambda: right.stats()["sent"] == 5, 30, what="5 sent")
    finally:
        wrong.close()
        right.close()
    assert right.stats()["dropped"] == right.stats()["refused"] == 0
    consumer = KafkaConsumer(
        "events.reco_responses",
        bootstrap_servers=broker,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    mine = [m.value for m in consumer if marker.encode() in m.value]
    consumer.close()
    assert len(mine) == 5


@pytest.mark.integration
def test_ray_app_broker_no_schemas(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_app", "broker", "--port", "0", "--no-schemas"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        servers = re.search(r"listening on (\S+);", first)
        assert servers, first
        # the banner's other lines (storage, topics) come in any order before the wait
        banner = [proc.stdout.readline() for _ in range(2)]
        assert any("schema validation is off" in line for line in banner), banner
        ensure_topics(servers.group(1), {"events.watch": 1})
        producer = KafkaProducer(bootstrap_servers=servers.group(1), retries=0)
        assert _send(producer, "events.watch", INVALID_WATCH) == 0
        producer.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    assert proc.returncode == 0
