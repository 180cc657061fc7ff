"""HTTP ingress (FastAPI): recommendations, liveness and readiness.

Routes here: ``GET /recommend/{user_id}`` (text line, or JSON with ``?format=json``),
``GET /healthz`` (the process answers) and ``GET /readyz`` (it can answer recommendations);
both are local to the replica. The bearer-protected status, trace and admin routes are in
:mod:`ray_app.serving.admin`.
"""

# No `from __future__ import annotations` here: FastAPI must see the real Annotated[...] types
# of route parameters, which Serve re-binds on the replica class.

import asyncio
import logging
import re
import time
import uuid
from typing import Annotated, Any, Literal, Self

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram

from ray_app.events.reco import served_reco_event
from ray_app.registry.signing import SigningConfig
from ray_app.serving import security
from ray_app.serving.admin import REQUEST_ID_PATTERN, AdminRoutes, admin_api, errors
from ray_app.serving.answer import Answer
from ray_app.serving.auth import AuthError, ClientAuthenticator, Identity
from ray_app.serving.batching import AdaptiveBatcher
from ray_app.serving.breaker import Breaker
from ray_app.serving.config import ApiKey, ClientAuth, ServeArgs, updated_config
from ray_app.serving.last_resort import LastResort
from ray_app.serving.provenance import RecoLogger, TraceStore
from ray_app.serving.quotas import Quotas, Take
from ray_app.serving.security import HeaderLimit, KeyStore

log = logging.getLogger("ray.serve")

# No leading dot: `.` and `..` are path components, never user ids.
USER_ID_PATTERN = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
MAX_HEADER_BYTES = 16 * 1024
"""Largest total of request headers the ingress accepts (431 above)."""

api = FastAPI(
    title="ray_app recommendations",
    description=(
        "`GET /recommend/{user_id}` answers one line of comma-separated movie ids, best first "
        "(the course platforms' contract); `?format=json` adds variant, model, version and "
        "request id. It always answers: a failing or slow variant is replaced by the fallback "
        "model. Requests are limited per user and per client (429 with `Retry-After`); client "
        "API keys or OAuth 2.0 bearer tokens are optional unless the service requires them. "
        "`/admin/...` routes need a bearer token with the `admin` role (`reader` may list, "
        "trace and read `/admin/status`)."
    ),
    version="0.3.0",
    # A trailing slash is a 404, not a 307 whose Location is built from the client's Host.
    redirect_slashes=False,
)
api.add_middleware(HeaderLimit, max_bytes=MAX_HEADER_BYTES)
api.include_router(admin_api)

# The key store lives in ``security.STATE`` (see ReplicaState for why).


def _digits(value: Any) -> Any:
    """``k`` as sent: plain decimal digits only (no sign, underscores or spaces)."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,3}", value):
        raise ValueError("k must be a whole number from 1 to 100 written in digits")
    return value


def _request_id(request: Request) -> str:
    """The client's ``X-Request-ID`` when it sent a usable one, else a fresh id."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    """422 naming each bad field and the rule it broke, never echoing the input back."""
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))[:200], "type": e.get("type")}
        for e in exc.errors()[:10]
    ]
    return JSONResponse({"detail": detail}, status_code=422)


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> Response:
    """No 5xx: a recommendation route answers its own errors from its last-resort list
    (:meth:`Ingress.recommend`), so whatever reaches here is refused as a bad request."""
    log.exception("unexpected error on %s", request.url.path, exc_info=exc)
    return JSONResponse({"detail": "request could not be processed"}, status_code=400)


def _unavailable() -> Response:
    """503 with ``Retry-After``: what a client gets instead of an empty list."""
    return JSONResponse(
        {"detail": "no recommendations available yet; retry shortly"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


def _app_name() -> str | None:
    """The Serve app this replica belongs to; None outside a replica (unit tests)."""
    try:
        return str(serve.get_replica_context().app_name)
    except Exception:
        return None


class IngressSettings(BaseModel):
    """What the ingress fixes at start: its part of :class:`ServeArgs` (validated there, and
    documented there under the same names)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    default_k: int
    """List length when a request does not give ``k``."""
    fallback_model: str
    """Registry name of the fallback model; its full lists become the last-resort answer."""
    registry: str
    """Registry root: the last-resort list is seeded from the fallback model there."""
    signing: SigningConfig
    """How the registry's signatures are verified."""
    router_deadline_s: float
    """Deadline of the call to the router; past it the fallback model answers."""
    rate_limit_per_min: int
    """Requests per minute per user, cluster-wide."""
    client_quota_per_min: int
    """Requests per minute per client, cluster-wide."""
    client_auth: ClientAuth
    """Client authentication of ``/recommend``."""
    api_keys: list[ApiKey]
    """Admin API keys (hashed), merged with the ones from the environment."""
    kafka_bootstrap_servers: str
    """Where reco events go; empty disables sending them."""
    reco_topic: str
    """JSON-dialect reco topic."""
    reco_buffer: int
    """Bound of the in-memory reco-event buffer."""
    trace_size: int
    """Recent answers kept for ``GET /trace/{request_id}``."""

    @classmethod
    def from_args(cls, args: ServeArgs) -> Self:
        """The ingress's part of the app's arguments."""
        return cls.model_validate(args.model_dump(include=set(cls.model_fields)))


class IngressConfig(BaseModel):
    """The ingress's ``user_config``: how requests are batched to the router."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_batch_size: int = Field(default=32, ge=1, le=1024)
    """Most requests handed to the router in one call."""
    max_batches_in_flight: int = Field(default=2, ge=1, le=64)
    """Batches kept at the router at once; arrivals meanwhile form the next one."""


@serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Ingress(AdminRoutes):
    """Validates, authenticates, rate-limits and logs requests; the router does assignment and
    ranking."""

    def __init__(
        self, router: DeploymentHandle, fallback: DeploymentHandle, settings: IngressSettings
    ) -> None:
        self.router = router
        self.fallback = fallback
        self.default_k = settings.default_k
        self.router_deadline_s = settings.router_deadline_s
        self.breaker = Breaker()
        self.user_limit = settings.rate_limit_per_min
        self.client_quota = settings.client_quota_per_min
        security.STATE.keys = KeyStore(settings.api_keys)
        if not len(security.STATE.keys):
            log.warning("no admin API keys configured: /admin routes will answer 401")
        self.auth = ClientAuthenticator(settings.client_auth)
        self.quotas = Quotas(_app_name())
        self.quotas.connect()
        self.last_resort = LastResort(settings.fallback_model, min_items=settings.default_k)
        self.last_resort.seed(settings.registry, settings.signing)
        self.batching: IngressConfig | None = None
        # Requests that arrive while earlier batches are with the router leave together: the
        # chain behind the router is then paid once per batch, not once per request. The
        # limits are set by reconfigure().
        self.batcher: AdaptiveBatcher[tuple[str, int], Answer] = AdaptiveBatcher(self._route_many)
        self.reco_log = RecoLogger(
            settings.kafka_bootstrap_servers, settings.reco_topic, settings.reco_buffer
        )
        self.traces = TraceStore(settings.trace_size)
        tags: Any = ("variant", "model_version")  # Ray annotates tag_keys as a 1-tuple
        self.m_requests = Counter(
            "app_requests", description="Recommendation answers.", tag_keys=tags
        )
        self.m_latency = Histogram(
            "app_latency_ms",
            description="End-to-end recommendation latency at the ingress (ms).",
            boundaries=[1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500],
            tag_keys=tags,
        )
        self.m_fallbacks = Counter(
            "app_fallbacks",
            description="Answers served by the fallback model.",
            tag_keys=(*tags, "reason"),
        )
        self.m_errors = Counter(
            "app_errors",
            description="Requests the ingress answered on its own, by the stage that failed.",
            tag_keys=("stage",),
        )
        self.m_limited = Counter(
            "app_rate_limited",
            description="Requests refused with 429 (a user's limit or a client's quota).",
            tag_keys=("key",),
        )
        self.m_dropped = Counter(
            "app_reco_log_dropped", description="Reco events not sent to Kafka."
        )

    def __del__(self) -> None:
        # Serve calls this when the replica stops: hand what the producer holds to Kafka.
        reco_log = getattr(self, "reco_log", None)  # absent if __init__ failed
        if reco_log is not None:
            reco_log.close()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply an :class:`IngressConfig` (router batching)."""
        self.batching = updated_config(self.batching, IngressConfig, user_config, "Ingress")
        self.batcher.configure(
            max_batch_size=self.batching.max_batch_size,
            max_in_flight=self.batching.max_batches_in_flight,
        )

    async def _route_many(self, requests: list[tuple[str, int]]) -> list[Answer]:
        resp = self.router.route_batch.remote([u for u, _ in requests], [k for _, k in requests])
        try:
            answers: list[Answer] = await asyncio.wait_for(
                resp,  # type: ignore[arg-type]
                timeout=self.router_deadline_s,
            )
        except TimeoutError:
            resp.cancel()  # frees this batch's slot; its callers fall back
            raise
        return answers

    def _take(self, request: Request, user_id: str, who: Identity | None) -> Take:
        """The request's buckets: its client's quota and its user's limit.

        The user bucket of an authenticated call is its own (the token's subject, or the API
        key's client plus the id), so an anonymous flood naming an id cannot lock the real
        user out; anonymous calls share the id's bucket and their address's quota.
        """
        if who is None:
            addr = request.client.host if request.client else "unknown"
            return ((f"addr:{addr}", self.client_quota), (f"user:{user_id}", self.user_limit))
        user = f"sub:{who.subject}" if who.subject else f"{who.client}:user:{user_id}"
        return ((who.client, who.quota_per_min or self.client_quota), (user, self.user_limit))

    @api.get("/healthz", responses=errors())
    async def healthz(self) -> dict[str, str]:
        """Liveness: the replica's event loop answers (no call leaves the replica)."""
        return {"status": "ok"}

    @api.get("/readyz", responses=errors(503))
    async def readyz(self) -> Response:
        """Readiness: the ingress holds a list to answer with (no call leaves the replica)."""
        if not self.last_resort.items(1):
            return _unavailable()
        return JSONResponse({"status": "ready"})

    @api.get(
        "/recommend/{user_id}",
        response_model=None,
        responses={
            200: {
                "description": "Text: `id1,id2,…`; JSON (`format=json`): items, variant, "
                "model, model_version, request_id, fallback, latency_ms.",
                "content": {"text/plain": {}, "application/json": {}},
            },
            **errors(401, 429, 503),
        },
    )
    async def recommend(
        self,
        request: Request,
        user_id: Annotated[
            str,
            Path(
                pattern=USER_ID_PATTERN,
                description="User id: 1-64 of A-Z a-z 0-9 _ . -, not starting with a dot",
            ),
        ],
        k: Annotated[
            int | None,
            BeforeValidator(_digits),
            Query(ge=1, le=100, description="List length, 1-100 in digits (default 20)"),
        ] = None,
        format: Annotated[
            Literal["text", "json"], Query(description="`text` (default) or `json`")
        ] = "text",
    ) -> Response:
        """Top-k movie ids for ``user_id``."""
        t0 = time.perf_counter()
        try:
            who = await self.auth.identify(request.headers.get("authorization"))
        except AuthError as exc:
            return JSONResponse(
                {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        take = self._take(request, user_id, who)
        wait = await self.quotas.take(take)
        if wait > 0:
            self.m_limited.inc(tags={"key": "anonymous" if who is None else "authenticated"})
            return JSONResponse(
                {"detail": f"rate limit exceeded; retry in {wait:.1f}s"},
                status_code=429,
                headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            )
        kk = k or self.default_k
        try:
            rid = _request_id(request)
            return await self._answer(user_id, kk, rid, json_body=format == "json", t0=t0)
        except Exception:
            # Last line of defence: a recommendation request still gets the last full fallback list.
            log.exception("ingress failed for %s; last-resort list", user_id)
            self.m_errors.inc(tags={"stage": "ingress"})
            items = self.last_resort.items(kk)
            return PlainTextResponse(",".join(items)) if items else _unavailable()

    async def _answer(
        self, user_id: str, k: int, request_id: str, *, json_body: bool, t0: float
    ) -> Response:
        if not self.breaker.allow():
            # The router failed repeatedly just now: answer at once instead of waiting out
            # its deadline again.
            self.m_errors.inc(tags={"stage": "router_open"})
            ans = await self._fallback(user_id, k)
        else:
            try:
                ans = await asyncio.wait_for(
                    self.batcher.submit((user_id, k)), timeout=self.router_deadline_s
                )
                self.breaker.record(ok=True)
            except Exception as exc:
                self.breaker.record(ok=False)
                log.warning("router failed for %s (%r); ingress fallback", user_id, exc)
                self.m_errors.inc(tags={"stage": "router"})
                ans = await self._fallback(user_id, k)
        self.last_resort.offer(ans)
        if not ans.items:
            # Router and fallback both came back empty (cold or dead replicas): never an empty
            # 200. The ingress's own list answers; without one the client is told to retry.
            self.m_errors.inc(tags={"stage": "empty"})
            ans = self.last_resort.answer(ans, k)
            if not ans.items:
                return _unavailable()
        latency_ms = round((time.perf_counter() - t0) * 1000, 3)
        ans = ans.model_copy(
            update={"user_id": user_id, "request_id": request_id, "latency_ms": latency_ms}
        )
        tags = {"variant": str(ans.variant), "model_version": str(ans.model_version)}
        self.m_requests.inc(tags=tags)
        self.m_latency.observe(latency_ms, tags=tags)
        if ans.fallback:
            self.m_fallbacks.inc(tags={**tags, "reason": str(ans.fallback_reason)})
        event = served_reco_event(
            user_id=user_id,
            items=ans.items,
            variant=ans.variant,
            model=ans.model,
            version=ans.model_version,
            latency_ms=latency_ms,
            request_id=request_id,
        )
        self.traces.put(ans, event)
        if self.reco_log.enabled and not self.reco_log.log(event):
            self.m_dropped.inc()
        if json_body:
            return Response(ans.model_dump_json(), media_type="application/json")
        return PlainTextResponse(",".join(ans.items))

    async def _fallback(self, user_id: str, k: int) -> Answer:
        """The fallback model's answer when the router failed; the last-resort list if it
        failed too."""
        update: dict[str, Any] = {
            "variant": None,
            "known_user": False,
            "fallback": True,
            "fallback_reason": "router_error",
        }
        try:
            fb: Answer = await asyncio.wait_for(
                self.fallback.recommend.remote(user_id, k),  # type: ignore[arg-type]
                timeout=self.router_deadline_s,
            )
            return fb.model_copy(update=update)
        except Exception:
            self.m_errors.inc(tags={"stage": "fallback"})
            return self.last_resort.answer(Answer.model_validate(update), k)
