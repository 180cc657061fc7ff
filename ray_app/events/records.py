"""The JSON dialect's wire records: one pydantic model per kind, the one place that says which
fields a record carries, which of them are required and which JSON types each one accepts.

:mod:`ray_app.events.json_dialect` takes its required and optional fields from these models,
and the JSON Schemas that the embedded broker enforces and ``ray-app schemas export`` writes
are generated from them (:mod:`ray_app.events.json_schema`). The models say what a record must
look like on the wire, not the configurable rules of
:class:`~ray_app.events.model.ValidationRules` (rating range, numeric user ids, list length):
those stay with the consumer, whose dead-letter path also guards brokers that do not validate.
Anything not listed is allowed and ignored, which is how the schemas evolve additively.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field

from ray_app.events._vector import INT32_MAX

JsonKind = Literal["watch", "rate", "reco_requests", "reco_responses"]

# Ids are strings at the edges, but most producers send small integers as JSON numbers.
Id = Annotated[str, Field(min_length=1)] | float
# The dialect reads every field as text, so a number may also come as its digits in a string.
Count = Annotated[int, Field(ge=0, le=INT32_MAX)] | Annotated[str, Field(pattern=r"^[0-9]+$")]
# Epoch seconds as text (integer, decimal or exponent form) or ISO-8601, as _vector reads them.
TimeText = Annotated[
    str,
    Field(
        pattern=r"^(-?[0-9]+(\.[0-9]*)?|-?[0-9]+(\.[0-9]+)?[eE][+-]?[0-9]+"
        r"|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,9})?"
        r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?)$"
    ),
]
Decimal = float | Annotated[str, Field(pattern=r"^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$")]
NonNegativeDecimal = (
    Annotated[float, Field(ge=0)]
    | Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$")]
)
Status = Annotated[int, Field(ge=0, le=999)] | Annotated[str, Field(pattern=r"^[0-9]+$")]
FreeText = str | float | None


class _Record(BaseModel):
    """Fields every kind carries."""

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)

    ts: float | TimeText
    """Event time: epoch seconds (integer, decimal or exponent form) or an ISO-8601 string."""
    user_id: Id
    """The user, as a string or a JSON number."""


class WatchRecord(_Record):
    """A user streamed one minute of a movie."""

    model_config = ConfigDict(title="watch")

    movie_id: Id
    """The movie, as a string (a slug) or a JSON number."""
    minute: Count
    """Which minute of the movie, from 0."""


class RateRecord(_Record):
    """A user rated a movie."""

    model_config = ConfigDict(title="rate")

    movie_id: Id
    """The movie, as a string (a slug) or a JSON number."""
    rating: Decimal
    """The rating; the consumer checks it against its rating_min and rating_max."""


class RecoRequestRecord(_Record):
    """A user asked for recommendations."""

    model_config = ConfigDict(title="reco_requests")

    server: Id | None = None
    """Which server took the request."""


class RecoResponseRecord(_Record):
    """The service answered a recommendation request."""

    model_config = ConfigDict(title="reco_responses")

    server: Id
    """Who answered: <variant>@<model>:<version> from the Serve app, or a server name."""
    status: Status
    """HTTP status of the answer."""
    items: list[Id]
    """Recommended movie ids, best first."""
    latency_ms: NonNegativeDecimal
    """Time to answer, in milliseconds."""
    request_id: FreeText = None
    """Schema v2: the service's request id (its X-Request-Id header), to trace one answer."""
    ab_variant: FreeText = None
    """Schema v2: the A/B slot that answered."""
    model_version: FreeText = None
    """Schema v2: the registry version of the model that answered."""


WIRE_RECORDS: Final[dict[str, type[_Record]]] = {
    "watch": WatchRecord,
    "rate": RateRecord,
    "reco_requests": RecoRequestRecord,
    "reco_responses": RecoResponseRecord,
}
"""The wire model of each JSON kind."""


def required_fields(kind: str) -> tuple[str, ...]:
    """Fields a ``kind`` record must carry (not null), in wire order."""
    fields = WIRE_RECORDS[kind].model_fields
    return tuple(name for name, info in fields.items() if info.is_required())


def optional_fields(kind: str) -> tuple[str, ...]:
    """Fields a ``kind`` record may carry (absent or null reads as null), in wire order."""
    fields = WIRE_RECORDS[kind].model_fields
    return tuple(name for name, info in fields.items() if not info.is_required())


def list_fields(kind: str) -> frozenset[str]:
    """Fields of a ``kind`` record that are JSON arrays."""
    fields = WIRE_RECORDS[kind].model_fields
    return frozenset(name for name, info in fields.items() if get_origin(info.annotation) is list)
