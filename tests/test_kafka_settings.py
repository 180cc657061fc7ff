"""Kafka settings from env/config pass through to kafka-python, with clear errors."""

from __future__ import annotations

import pytest

from ray_app.broker.settings import KafkaSettings


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
