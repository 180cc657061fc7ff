"""The one answer model that flows through the serving graph, from model server to client.

Each hop fills in its part and passes the same type on: the model server sets ``items``,
``model``, ``model_version`` and ``known_user``; the router sets ``variant`` and the fallback
fields; the ingress adds ``user_id``, ``request_id`` and ``latency_ms`` and returns it as the
JSON body (or its ``items`` as the text line), and builds the reco event from it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    """A recommendation list and where it came from (field order is the JSON body's)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    user_id: str | None = None
    """The requested user (set by the ingress)."""
    items: list[str] = Field(default_factory=list)
    """Movie ids, best first."""
    variant: str | None = None
    """A/B slot the user is assigned to (None when the router itself failed)."""
    model: str | None = None
    """Registry model name that produced the list (the fallback's when it answered)."""
    model_version: str | None = None
    """Registry version of that model."""
    known_user: bool = False
    """Whether the variant scored this user personally (False whenever the fallback answered)."""
    fallback: bool = False
    """True when the variant could not answer and the fallback model did."""
    fallback_reason: str | None = None
    """Why: ``error``, ``timeout`` or ``cannot_score`` (variant), ``router_error`` (ingress)."""
    request_id: str | None = None
    """Serve's id of this request (its ``X-Request-ID`` response header), also in the reco
    event and the key of ``GET /trace/{request_id}``."""
    latency_ms: float | None = None
    """End-to-end time at the ingress, in milliseconds."""
