"""Arguments of the Serve application (the ``args`` block in ``serve_config.yaml``), and the
validation every deployment's ``reconfigure`` applies to its ``user_config``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ray_app.config import ConfigError, read_yaml_mapping, validate_config
from ray_app.registry.signing import SigningConfig
from ray_app.state.config import StateConfig

log = logging.getLogger("ray.serve")
M = TypeVar("M", bound=BaseModel)

INTERNAL_DEPLOYMENT: dict[str, Any] = {
    # One replica: an admin switch or weight change is a handle call, which reaches a single
    # replica, so a second one would keep serving the old version (serve_config.yaml, README
    # "Replicas and faults"). The re-ranker, configured only by user_config, runs two there.
    "num_replicas": 1,
    "max_ongoing_requests": 256,
    "ray_actor_options": {"num_cpus": 0.1},
    # Internal hops: a per-call access log line cost measurable CPU under load; the ingress
    # keeps its own (and every answer is a reco event).
    "logging_config": {"enable_access_log": False},
}
"""``@serve.deployment`` options shared by the router, the model servers and the re-ranker."""

PROXY_HTTP_OPTIONS: dict[str, Any] = {"keep_alive_timeout_s": 5, "request_timeout_s": 10}
"""Serve proxy limits (``http_options``; ``serve_config.yaml`` sets the same): idle keep-alive
connections close after 5 s (Serve's default is 90) and a request past 10 s is answered 408
(the graph's own deadlines end far sooner). Header-read timeouts and a connection cap exist
only in HAProxy mode (``RAY_SERVE_HAPROXY_*``, set by :func:`ray_app.runtime.init_ray`)."""
Weight = Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False, strict=True)]
"""An A/B traffic weight: a finite JSON/YAML number (not a string or a boolean), 0 to 10^6, so
that sums stay finite."""
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
"""Names of keys and clients: no path separators, no leading dot (so never ``.`` or ``..``)."""


class VariantSpec(BaseModel):
    """One A/B slot: a registry model (and optional pinned version) with a traffic weight."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,32}$")
    """Slot name (``A``, ``B``, …); also the deployment name suffix."""
    model: str = "itemknn"
    """Registry model name served by this slot."""
    version: str | None = None
    """Version to start with; None starts with the latest (or with ``follow``'s target)."""
    follow: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    """``latest`` or a registry alias (``production``, set when retraining promotes) that this
    slot switches to whenever it moves, polled every ``watch_interval_s``; None = only
    ``/admin`` switches and ``POST /admin/reload`` change the version."""
    weight: Weight = 1.0
    """Relative share of users assigned to this slot (a finite number, 0 to 10^6)."""


class ApiKey(BaseModel):
    """A credential for the admin API, stored only as the SHA-256 of the bearer token."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Who is calling (written to the audit log with every change)."""
    role: Literal["admin", "reader"]
    """``admin`` may change things; ``reader`` may list variants and read traces."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 hex of the bearer token."""


class ClientKey(BaseModel):
    """An API key for ``/recommend`` (a client such as a gateway), stored only as SHA-256."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field(pattern=NAME_PATTERN)
    """The client (its quota bucket and the per-user limits of its users are keyed by it)."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 hex of the bearer token (``printf %s "$KEY" | sha256sum``)."""
    quota_per_min: int | None = Field(default=None, ge=1)
    """Requests per minute for this key across all ingress replicas; None =
    ``client_quota_per_min``."""


JwtAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
"""Signature algorithms a JWT may use: asymmetric only (never ``none`` or a shared secret)."""


def _rs256() -> list[JwtAlgorithm]:
    return ["RS256"]


class JwtAuth(BaseModel):
    """OAuth 2.0 bearer tokens (JWTs) accepted on ``/recommend``, checked against an issuer's
    published key set."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    issuer: str = Field(min_length=1)
    """Required ``iss`` claim (the authorization server's issuer identifier)."""
    jwks: str = Field(min_length=1)
    """The issuer's JSON Web Key Set: an ``https://`` (or ``http://``) URL, fetched and cached,
    or a file path (relative paths resolve against ``RAY_APP_HOME``)."""
    audience: str | None = None
    """Required ``aud`` claim; None accepts tokens without checking their audience."""
    algorithms: list[JwtAlgorithm] = Field(default_factory=_rs256, min_length=1)
    """Signature algorithms accepted (asymmetric only: never ``none`` or a shared secret)."""
    leeway_s: float = Field(default=30.0, ge=0.0, le=600.0)
    """Clock skew allowed on ``exp`` and ``nbf``."""


class ClientAuth(BaseModel):
    """Client authentication of ``/recommend``: off by default (the course platforms call it
    without credentials); credentials that are sent are always checked (a bad one is 401)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    required: bool = False
    """Refuse requests without a valid API key or bearer token (401)."""
    api_keys: list[ClientKey] = Field(default_factory=list)
    """Client API keys, each with an optional quota of its own."""
    jwt: JwtAuth | None = None
    """Accept OAuth 2.0 bearer JWTs from this issuer; None = API keys only."""

    @model_validator(mode="after")
    def _some_credential(self) -> ClientAuth:
        if self.required and not self.api_keys and self.jwt is None:
            raise ValueError("required: true needs api_keys or jwt, or no client could call")
        return self


class ServeArgs(BaseModel):
    """What the app serves. Validated when the app is built, so a bad config fails at deploy."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    registry: str = Field(
        default_factory=lambda: os.environ.get("RAY_APP_REGISTRY", "data/registry")
    )
    """Registry root (local path or pyarrow filesystem URI). Each replica resolves a relative
    path against its own ``RAY_APP_HOME`` (after ``serve deploy``: the environment the nodes'
    ``ray start`` ran with, not the client's)."""
    model: str = "ease"
    """Model of the single default variant ``A`` when ``variants`` is empty (``--model``)."""
    model_version: str | None = None
    """Pinned version of that default variant; None serves the latest."""
    variants: list[VariantSpec] = Field(default_factory=list)
    """Fixed A/B slots, one recommender deployment each. Empty: one slot ``A`` = ``model``."""
    experiment_salt: str = "exp-1"
    """Salt of the sticky assignment hash; change it to re-randomise users for a new experiment."""
    fallback_model: str = "popularity"
    """Registry name of the cheap model that answers when a variant cannot."""
    default_k: int = Field(default=20, ge=1, le=100)
    """List length when a request does not give ``k``."""
    deadline_s: float = Field(default=0.5, gt=0.0, le=30.0)
    """Per-call deadline for a variant; past it the fallback answers."""
    router_deadline_s: float = Field(default=2.0, gt=0.0, le=60.0)
    """Deadline of the ingress's call to the router (above ``deadline_s`` plus the fallback's
    own second); past it the ingress answers from the fallback model, or its last-resort list."""
    watch_interval_s: float = Field(default=30.0, ge=0.0)
    """Seconds between registry polls of slots that ``follow`` a reference; 0 = no watching."""
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    """Most requests the ingress hands the router in one call."""
    max_batches_in_flight: int = Field(default=2, ge=1, le=64)
    """Batches the ingress keeps at the router at once; arrivals meanwhile form the next one."""
    diversity: float = Field(default=0.2, ge=0.0, le=1.0)
    """MMR weight of the re-ranker (0 = pure relevance order)."""
    novelty: float = Field(default=0.0, ge=0.0, le=1.0)
    """Long-tail weight of the re-ranker against feedback loops (0 = off; counts from the
    ``fallback_model``'s latest registry version). See README, "Feedback loops"."""
    rate_limit_per_min: int = Field(default=100, ge=1)
    """Requests per minute per user across all ingress replicas (burst = one minute's worth).
    Keyed by the authenticated identity when there is one (a JWT's ``sub``, or the API key's
    client plus the user id), so an anonymous flood naming an id cannot lock that user out."""
    client_quota_per_min: int = Field(default=60_000, ge=1)
    """Requests per minute per client across all ingress replicas: per API key or JWT client,
    else per client address. High enough for a gateway fronting many users (1,000/s); stops
    one client rotating user ids past ``rate_limit_per_min``."""
    client_auth: ClientAuth = Field(default_factory=ClientAuth)
    """Client authentication of ``/recommend`` (off by default)."""
    api_keys: list[ApiKey] = Field(default_factory=list)
    """Admin API keys (hashed, so safe in ``serve_config.yaml``). The ingress replica adds
    ``RAY_APP_API_KEYS`` / ``RAY_APP_ADMIN_TOKEN`` from its own environment: the client's for
    ``ray-app serve`` on a local Ray, the nodes' ``ray start`` environment after
    ``serve deploy``."""
    kafka_bootstrap_servers: str = Field(
        default_factory=lambda: os.environ.get("RAY_APP_RECO_BOOTSTRAP_SERVERS", "")
    )
    """Where reco events go; empty disables provenance logging to Kafka."""
    reco_topic: str = "events.reco_responses"
    """JSON-dialect reco topic (``<prefix>.reco_responses``) so the ingest job can snapshot it."""
    reco_buffer: int = Field(default=10_000, ge=1)
    """Bound of the in-memory reco-event buffer; events past it are dropped and counted."""
    trace_size: int = Field(default=10_000, ge=1)
    """Recent answers kept for ``GET /trace/{request_id}``."""
    signing: SigningConfig = Field(default_factory=SigningConfig)
    """How replicas verify registry signatures."""
    state: StateConfig | None = None
    """Fresh user history (``ray_app.state``; the state consumer writes it): model servers
    never recommend a user's watched or rated items and fold them into item-item scores at
    request time. None: models answer from what they were trained on only."""

    @model_validator(mode="after")
    def _default_variant(self) -> ServeArgs:
        if not self.variants:
            self.variants = [VariantSpec(name="A", model=self.model, version=self.model_version)]
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("at least one variant needs a positive weight")
        if self.router_deadline_s <= self.deadline_s:
            raise ValueError(
                f"router_deadline_s ({self.router_deadline_s}) must exceed deadline_s "
                f"({self.deadline_s}), or every slow variant would fail the whole request"
            )
        return self


APP_NAME = "recommender"
"""The application in ``serve_config.yaml`` whose ``args`` are :class:`ServeArgs`."""


def load_serve_args(path: Path | None = None, **overrides: Any) -> ServeArgs:
    """:class:`ServeArgs` from a YAML file, then non-None ``overrides``: either a Serve deploy
    config (``serve_config.yaml``: the ``args`` of application ``recommender``; its
    ``deployments`` overrides apply to ``serve deploy`` only) or a mapping of ServeArgs fields.
    Raises :class:`ConfigError` naming the file and each bad field."""
    data = read_yaml_mapping(path) if path is not None else {}
    if "applications" in data:
        apps = data["applications"] or []
        found = [a for a in apps if isinstance(a, dict) and a.get("name") == APP_NAME]
        if not found:
            raise ConfigError(f"{path}: no application named {APP_NAME!r} under applications")
        data = dict(found[0].get("args") or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(ServeArgs, data, path)


def _user_config_error(deployment: str, exc: ValidationError) -> ConfigError:
    """One line naming the deployment, each bad field and what was wrong with it."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return ConfigError(
        f"{deployment} user_config: {'; '.join(parts)}; fix it in serve_config.yaml's "
        "deployments section or the ServeArgs it was built from"
    )


def updated_config(
    current: M | None,
    config_class: type[M],
    user_config: Mapping[str, Any] | None,
    deployment: str,
    context: dict[str, Any] | None = None,
) -> M:
    """Validate a ``user_config`` for ``reconfigure``.

    At start (``current`` is None) an invalid one raises :class:`ConfigError`, so the deploy
    fails and ``serve status`` names the field. On a live update it is refused and logged and
    ``current`` is returned: a replica failing ``reconfigure`` would be replaced by ones that
    cannot start either, taking the deployment down over a typo.
    """
    try:
        return config_class.model_validate(dict(user_config or {}), context=context)
    except ValidationError as exc:
        err = _user_config_error(deployment, exc)
        if current is None:
            raise err from None
        log.error("%s; keeping %s", err, current)
        return current
