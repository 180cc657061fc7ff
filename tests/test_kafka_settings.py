"""Kafka settings from env/config pass through to kafka-python, with clear errors; production
durability (replication, min.insync.replicas, acks=all, idempotence) and broker storage."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
from kafka import KafkaAdminClient

from ray_app.broker.embedded import create_topics, new_topics
from ray_app.broker.settings import KafkaSettings
from ray_app.broker.storage import tansu_storage
from ray_app.errors import UserError
from ray_app.replay import events as replay_events


def test_sasl_ssl_settings_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_APP_KAFKA_BOOTSTRAP_SERVERS", "b1:9093,b2:9093")
    monkeypatch.setenv("RAY_APP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RAY_APP_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("RAY_APP_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("RAY_APP_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("RAY_APP_KAFKA_SSL_CAFILE", "/etc/ca.pem")
    monkeypatch.setenv("RAY_APP_KAFKA_BOOTSTRAP_TIMEOUT_MS", "1500")
    kw = KafkaSettings().client_kwargs()
    assert kw["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "svc" and kw["sasl_plain_password"] == "s3cret"
    assert kw["ssl_cafile"] == "/etc/ca.pem"
    assert kw["bootstrap_timeout_ms"] == 1500
    assert "s3cret" not in repr(KafkaSettings())  # secrets never show up in logs


def test_plaintext_has_no_security_keys() -> None:
    kw = KafkaSettings(bootstrap_servers="localhost:9092").client_kwargs()
    assert kw["security_protocol"] == "PLAINTEXT"
    assert not {k for k in kw if k.startswith(("sasl", "ssl"))}


def test_bad_settings_name_the_field_and_fix() -> None:
    with pytest.raises(ValueError, match="host:port"):
        KafkaSettings(bootstrap_servers="localhost")
    with pytest.raises(ValueError, match="sasl_mechanism"):
        KafkaSettings(bootstrap_servers="h:1", security_protocol="SASL_PLAINTEXT").client_kwargs()
    with pytest.raises(ValueError, match="embedded"):
        KafkaSettings().client_kwargs()


def test_production_durability_comes_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_APP_KAFKA_BOOTSTRAP_SERVERS", "b1:9092,b2:9092,b3:9092")
    monkeypatch.setenv("RAY_APP_KAFKA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("RAY_APP_KAFKA_MIN_INSYNC_REPLICAS", "2")
    s = KafkaSettings()
    assert (s.replication_factor, s.min_insync_replicas) == (3, 2)
    assert s.topic_configs() == {"min.insync.replicas": "2"}
    kw = s.producer_kwargs()
    assert kw["acks"] == "all" and kw["enable_idempotence"] is True
    assert kw["bootstrap_servers"] == ["b1:9092", "b2:9092", "b3:9092"]
    # The embedded single broker's defaults.
    monkeypatch.delenv("RAY_APP_KAFKA_REPLICATION_FACTOR")
    monkeypatch.delenv("RAY_APP_KAFKA_MIN_INSYNC_REPLICAS")
    d = KafkaSettings(bootstrap_servers="h:1")
    assert (d.replication_factor, d.min_insync_replicas) == (1, 1)


def test_leader_only_acks_turn_idempotence_off_explicitly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAY_APP_KAFKA_ACKS", "1")
    with pytest.raises(ValueError, match="ENABLE_IDEMPOTENCE=false"):
        KafkaSettings(bootstrap_servers="h:1")
    monkeypatch.setenv("RAY_APP_KAFKA_ENABLE_IDEMPOTENCE", "false")
    assert KafkaSettings(bootstrap_servers="h:1").producer_options() == {
        "acks": 1,
        "enable_idempotence": False,
    }


def test_min_insync_above_replication_is_refused() -> None:
    with pytest.raises(ValueError, match="min_insync_replicas=3 exceeds replication_factor=2"):
        KafkaSettings(replication_factor=2, min_insync_replicas=3)


def test_new_topics_carry_replication_and_min_insync() -> None:
    reqs = new_topics({"a": 4, "b": 2}, {"b"}, replication=3, min_insync_replicas=2)
    assert [(t.name, t.num_partitions, t.replication_factor) for t in reqs] == [("a", 4, 3)]
    assert reqs[0].topic_configs == {"min.insync.replicas": "2"}
    assert new_topics({"a": 1}, set())[0].topic_configs == {}  # the broker's default


def test_replay_producer_is_durable_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, object]] = []

    class Producer:
        def __init__(self, **kw: object) -> None:
            made.append(kw)

        def send(self, *a: object, **kw: object) -> None:
            pass

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(replay_events, "KafkaProducer", Producer)
    events = pd.DataFrame(
        {"ts": [1], "user_id": ["1"], "line": ["2024-01-01T00:00:00,1,GET /rate/5=4"]}
    )
    replay_events.produce(events, {"bootstrap_servers": ["h:1"]}, replay_events.ReplayConfig())
    assert made[-1]["acks"] == "all" and made[-1]["enable_idempotence"] is True
    settings = KafkaSettings(bootstrap_servers="h:1", acks="1", enable_idempotence=False)
    replay_events.produce(events, settings.producer_kwargs(), replay_events.ReplayConfig())
    assert made[-1]["acks"] == 1 and made[-1]["enable_idempotence"] is False


def test_broker_storage_uri_becomes_tansu_url_and_env() -> None:
    st = tansu_storage(
        "s3://KEY:SEC%2Fret@bkt/kafka/log?endpoint_override=127.0.0.1:9000&scheme=http&region=eu-west-1"
    )
    assert st.url == "s3://bkt/kafka/log/" and st.durable
    assert st.env == {
        "AWS_ACCESS_KEY_ID": "KEY",
        "AWS_SECRET_ACCESS_KEY": "SEC/ret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
    }
    assert tansu_storage("s3://bkt").env == {}  # a real bucket: the environment's AWS_* apply
    assert not tansu_storage("memory://tansu/").durable
    with pytest.raises(UserError, match=r"memory://tansu/ .* or s3://bucket/prefix"):
        tansu_storage("sqlite://broker.db")


@pytest.mark.integration
def test_topics_are_created_with_the_settings_replication(broker: str) -> None:
    topic = f"repl-{os.getpid()}-{time.monotonic_ns()}"
    # Tansu records (but does not enforce) the replicas asked for: enough to see the request.
    create_topics(KafkaSettings(bootstrap_servers=broker, replication_factor=3), {topic: 2})
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        (desc,) = admin.describe_topics([topic])
    finally:
        admin.close()
    assert [len(p["replica_nodes"]) for p in desc["partitions"]] == [3, 3]
