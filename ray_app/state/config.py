"""The state store's configuration (one pydantic class, shared by the consumer and serving)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StateConfig(BaseModel):
    """Which store holds user state and how much of it is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: Literal["actor", "redis"] = "actor"
    """``actor``: a named Ray actor (nothing to install; one node's memory); ``redis``: a Redis
    server at ``url`` (more than one node or replica, survives a Ray restart)."""
    url: str = "redis://localhost:6379/0"
    """Redis URL (``kind: redis`` only)."""
    key_prefix: str = Field(default="ray_app:state:", min_length=1)
    """Prefix of every Redis key, so that several deployments can share one server."""
    actor_name: str = Field(default="ray_app_state", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    """Name of the embedded store's Ray actor (``kind: actor``); every process that opens the
    store with this name and ``namespace`` shares the one actor."""
    namespace: str = "ray_app"
    """Ray namespace of that actor."""
    detached: bool = True
    """The actor outlives the process that created it (a serving replica or consumer restart
    keeps the state); False ties it to its creator (tests)."""
    max_history: int = Field(default=200, ge=1, le=100_000)
    """Distinct items kept per user, most recent first; older ones are dropped."""
    trend_half_life_s: float = Field(default=3600.0, gt=0.0)
    """Half-life of the trending counts: an interaction counts half as much this much later."""
    timeout_s: float = Field(default=0.2, gt=0.0, le=30.0)
    """Longest a serving read waits for the store; past it the request is scored without
    fresh history (it still answers)."""


class StateConsumerConfig(BaseModel):
    """What the state consumer group reads and where it writes (see
    :mod:`ray_app.state.consumer`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    topics: list[str] = Field(default_factory=lambda: ["movielog"], min_length=1)
    """Activity topics. Line dialect: usually ``movielog``; JSON dialect: ``<prefix>.watch`` and
    ``<prefix>.rate`` (other kinds on these topics are read and ignored)."""
    dialect: Literal["line", "json"] = "line"
    """How the topics' records are written (the same parsers as ingest)."""
    json_topic_prefix: str = "events"
    """JSON dialect: the topic prefix, to tell each topic's event kind."""
    group_id: str = "ray-app-state"
    """Kafka consumer group, independent of ingest's: both read every record."""
    state: StateConfig = Field(default_factory=StateConfig)
    """The store the events go to."""
    max_poll_records: int = Field(default=2000, ge=1)
    """Records applied in one store write at most (per poll)."""
    poll_timeout_ms: int = Field(default=100, ge=1, le=10_000)
    """Longest one poll waits for records; bounds the added freshness lag when idle."""
    session_timeout_ms: int = Field(default=6000, ge=1000)
    """Kafka's session timeout (short: rebalances after a restart finish quickly)."""
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    """Heartbeat period; well below ``session_timeout_ms``."""
