"""Kafka client settings, from config files or ``RAY_APP_KAFKA_*`` environment variables.

The same settings drive the embedded broker on a laptop and a real, secured Kafka cluster in
production: ``bootstrap_servers``, the security fields and the durability fields change
(``replication_factor`` 3 and ``min_insync_replicas`` 2 on a production cluster; the embedded
single broker keeps the defaults, 1 and 1). README "Kafka in production" has the trade-offs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach Kafka. Empty ``bootstrap_servers`` means: start the embedded broker."""

    model_config = SettingsConfigDict(
        env_prefix="RAY_APP_KAFKA_", extra="forbid", use_attribute_docstrings=True
    )

    bootstrap_servers: str = ""
    """Comma-separated ``host:port`` list; empty starts the embedded Tansu broker."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How clients talk to the brokers: plain, TLS, SASL, or SASL over TLS."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism (required with a ``SASL_*`` protocol)."""
    sasl_username: str | None = None
    """SASL user (required with a ``SASL_*`` protocol)."""
    sasl_password: SecretStr | None = None
    """SASL password (required with a ``SASL_*`` protocol); never shown in logs or reprs."""
    ssl_cafile: str | None = None
    """CA bundle that signed the brokers' certificates (default: the system's)."""
    ssl_certfile: str | None = None
    """Client certificate, for brokers that require mutual TLS."""
    ssl_keyfile: str | None = None
    """Private key of ``ssl_certfile``."""
    ssl_check_hostname: bool = True
    """Check that a broker's certificate matches its host name."""
    client_id: str = "ray-app"
    """Client id the brokers see in their logs and quotas."""
    request_timeout_ms: int = Field(default=30_000, gt=0)
    """How long a client waits for the answer to one request."""
    bootstrap_timeout_ms: int = Field(default=30_000, gt=0)
    """How long a client tries the bootstrap servers before it gives up on them."""
    replication_factor: int = Field(default=1, ge=1)
    """Copies of each partition of the topics we create (3 on a production cluster; the
    embedded broker has one node, so 1). Existing topics are left as they are."""
    min_insync_replicas: int = Field(default=1, ge=1)
    """``min.insync.replicas`` of the topics we create: with ``acks=all`` a write succeeds only
    once this many replicas hold it (2 on a production cluster: one broker may fail without
    losing an acknowledged record or stopping writes)."""
    acks: Literal["all", "1", "0"] = "all"
    """Producer acknowledgements: ``all`` waits for the in-sync replicas; 1 only for the leader
    (a leader that dies before replicating loses the record); 0 for nothing."""
    enable_idempotence: bool = True
    """Producers number their records so a retried send is written once (needs ``acks=all``)."""

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, v: str) -> str:
        for part in filter(None, (p.strip() for p in v.split(","))):
            host, sep, port = part.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(
                    f"bootstrap_servers entry {part!r} is not host:port "
                    "(set RAY_APP_KAFKA_BOOTSTRAP_SERVERS=host1:9092,host2:9092)"
                )
        return v.strip()

    @model_validator(mode="after")
    def _check_durability(self) -> KafkaSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas={self.min_insync_replicas} exceeds replication_factor="
                f"{self.replication_factor}: no write could succeed; lower it (production: 3 and 2)"
            )
        if self.enable_idempotence and self.acks != "all":
            raise ValueError(
                f"enable_idempotence needs acks='all' (got acks={self.acks!r}): set "
                "RAY_APP_KAFKA_ACKS=all or RAY_APP_KAFKA_ENABLE_IDEMPOTENCE=false"
            )
        return self

    @property
    def servers(self) -> list[str]:
        """``bootstrap_servers`` as a list."""
        return [p.strip() for p in self.bootstrap_servers.split(",") if p.strip()]

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python producers, consumers and admin clients."""
        if not self.servers:
            raise ValueError("bootstrap_servers is empty: start the embedded broker or set it")
        kw: dict[str, Any] = {
            "bootstrap_servers": self.servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
        }
        if self.security_protocol.startswith("SASL"):
            if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
                raise ValueError(
                    f"security_protocol={self.security_protocol} needs sasl_mechanism, "
                    "sasl_username and sasl_password (RAY_APP_KAFKA_SASL_*)"
                )
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.security_protocol.endswith("SSL"):
            kw["ssl_check_hostname"] = self.ssl_check_hostname
            for src, dst in (
                ("ssl_cafile", "ssl_cafile"),
                ("ssl_certfile", "ssl_certfile"),
                ("ssl_keyfile", "ssl_keyfile"),
            ):
                if getattr(self, src):
                    kw[dst] = getattr(self, src)
        return kw

    def producer_kwargs(self) -> dict[str, Any]:
        """:meth:`client_kwargs` plus the producer's durability options (``acks``, idempotence)."""
        return {**self.client_kwargs(), **self.producer_options()}

    def producer_options(self) -> dict[str, Any]:
        """Only the producer's durability options, for code that gets its connection elsewhere."""
        acks: str | int = self.acks if self.acks == "all" else int(self.acks)
        return {"acks": acks, "enable_idempotence": self.enable_idempotence}

    def topic_configs(self) -> dict[str, str]:
        """Per-topic configs of the topics we create (``min.insync.replicas``)."""
        return {"min.insync.replicas": str(self.min_insync_replicas)}
