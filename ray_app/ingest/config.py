"""Ingest configuration (one pydantic class, validated at start)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ray_app.events.model import ValidationRules
from ray_app.paths import Location


class IngestConfig(BaseModel):
    """What to consume, how to batch it and where snapshots go."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    topics: list[str] = Field(default_factory=lambda: ["movielog"], min_length=1)
    """Topics to consume. Line dialect: usually one; JSON dialect: one per event kind."""
    dialect: Literal["line", "json"] = "line"
    """`line` (one topic, course-platform format) or `json` (one topic per kind)."""
    json_topic_prefix: str = "events"
    """JSON dialect: topics are `<prefix>.watch`, `<prefix>.rate`, `<prefix>.reco_responses`."""
    group_id: str = "ray-app-ingest"
    """Kafka consumer group; consumers sharing it split the partitions."""
    snapshot_dir: Location = "data/snapshots"
    """Where the Parquet snapshots go (``events/``, ``dead_letter/``, ``_commits/``): a path
    (relative paths resolve against ``RAY_APP_HOME``), ``file://…`` or ``s3://bucket/prefix``
    (any pyarrow filesystem URI)."""
    max_batch_records: int = Field(default=50_000, ge=1)
    """Flush a partition's buffer when it holds this many records…"""
    max_batch_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """…or this many bytes of raw values…"""
    max_batch_delay_s: float = Field(default=5.0, gt=0)
    """…or when its oldest record has waited this long (a quiet topic still lands on disk)."""
    until_idle_s: float | None = Field(default=None, gt=0)
    """Exit once no record arrived for this long (None: run until SIGTERM/SIGINT)."""
    dlq_topic: str | None = None
    """Also produce dead letters to this topic (they always go to Parquet)."""
    session_timeout_ms: int = Field(default=6000, ge=1000)
    """Kafka's session timeout; a low value keeps group joins and rebalances short, which
    matters most for short runs such as ``--until-idle`` and the demo."""
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    """Heartbeat period; must stay well below ``session_timeout_ms``."""
    max_poll_interval_ms: int = Field(default=60_000, ge=1000)
    """Longest gap between polls before the broker considers the consumer gone."""
    max_poll_records: int = Field(default=5000, ge=1)
    """Records returned by one poll at most."""
    fetch_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Bytes one fetch returns at most (per partition: the smaller of this and 16 MiB)."""
    rules: ValidationRules = Field(default_factory=ValidationRules)
    """Validation rules a record must pass to reach the snapshots (else: dead letters)."""
