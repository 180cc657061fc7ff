"""HTTP ingress (FastAPI): recommendations, traces, admin API, health.

Routes: ``GET /recommend/{user_id}`` (text line, or JSON with ``?format=json``),
``GET /trace/{request_id}``, ``GET /healthz`` and the bearer-protected ``/admin/...`` routes.
"""

# No `from __future__ import annotations` here: FastAPI must see the real Annotated[...] types
# of route parameters, which Serve re-binds on the replica class.

import logging
import re
import time
import uuid
from typing import Annotated, Any, Literal, Self

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram

from ray_app.events.reco import served_reco_event
from ray_app.registry.signing import SigningConfig
from ray_app.serving import security
from ray_app.serving.answer import Answer
from ray_app.serving.batching import AdaptiveBatcher
from ray_app.serving.config import ApiKey, ServeArgs, updated_config
from ray_app.serving.last_resort import LastResort
from ray_app.serving.provenance import RecoLogger, TraceStore
from ray_app.serving.security import KeyStore, Principal, RateLimiter, allows, token_hash

log = logging.getLogger("ray.serve")
# A child of Serve's logger, so admin changes land in the replica log files Serve writes.
audit = logging.getLogger("ray.serve.audit")

USER_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,64}$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
VARIANT_PATTERN = r"^[A-Za-z0-9_\-]{1,32}$"

api = FastAPI(
    title="ray_app recommendations",
    description=(
        "`GET /recommend/{user_id}` answers one line of comma-separated movie ids, best first "
        "(the course platforms' contract); `?format=json` adds variant, model, version and "
        "request id. It always answers: a failing or slow variant is replaced by the fallback "
        "model. Requests are rate-limited per key (429 with `Retry-After`). `/admin/...` "
        "routes need a bearer token with the `admin` role (`reader` may list and trace)."
    ),
    version="0.2.0",
)
bearer = HTTPBearer(auto_error=False, description="API key (stored server-side as SHA-256).")

# The key store lives in ``security.STATE`` (see ReplicaState for why).


def _principal(
    cred: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    if cred is None or not cred.credentials:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    p = security.STATE.keys.lookup(cred.credentials)
    if p is None:
        raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
    return p


def _need_admin(p: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not allows(p, "admin"):
        raise HTTPException(403, f"{p.name!r} has role {p.role!r}; this needs 'admin'")
    return p


def _need_reader(p: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not allows(p, "reader"):
        raise HTTPException(403, f"{p.name!r} has role {p.role!r}; this needs 'reader'")
    return p


Admin = Annotated[Principal, Depends(_need_admin)]
Reader = Annotated[Principal, Depends(_need_reader)]


class WeightsBody(BaseModel):
    """New A/B weights: every slot not named gets 0."""

    model_config = ConfigDict(extra="forbid")
    weights: dict[str, float] = Field(examples=[{"A": 0.9, "B": 0.1}])


class SwitchBody(BaseModel):
    """Registry model and version for a slot; ``version`` null = latest, ``model`` null = same."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")


def _reason(exc: BaseException) -> str:
    """The innermost error's type and message, without Ray's remote traceback."""
    while getattr(exc, "cause", None) is not None:
        exc = exc.cause  # type: ignore[attr-defined]
    msg = exc.args[0] if exc.args else str(exc)
    return f"{type(exc).__name__}: {msg}"


def _request_id(request: Request) -> str:
    """Serve's id of this request, which its middleware also returns as ``X-Request-ID`` (the
    client's own header when it sent a usable one); a fresh id when there is none."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


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
    rate_limit_per_min: int
    """Token-bucket limit per key."""
    rate_limit_key: Literal["user", "api_key", "client"]
    """What a bucket is keyed by."""
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
class Ingress:
    """Validates, rate-limits and logs requests; the router does assignment and ranking."""

    def __init__(
        self, router: DeploymentHandle, fallback: DeploymentHandle, settings: IngressSettings
    ) -> None:
        self.router = router
        self.fallback = fallback
        self.default_k = settings.default_k
        self.limit_key = settings.rate_limit_key
        security.STATE.keys = KeyStore(settings.api_keys)
        if not len(security.STATE.keys):
            log.warning("no admin API keys configured: /admin routes will answer 401")
        self.limiter = RateLimiter(settings.rate_limit_per_min)
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
            "app_rate_limited", description="Requests refused with 429.", tag_keys=("key",)
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
        answers: list[Answer] = await self.router.route_batch.remote(
            [u for u, _ in requests], [k for _, k in requests]
        )
        return answers

    def _limit_key(self, request: Request, user_id: str) -> str:
        if self.limit_key == "user":
            return f"user:{user_id}"
        if self.limit_key == "api_key":
            auth = request.headers.get("authorization", "")
            if auth:
                return f"key:{token_hash(auth)}"
        return f"addr:{request.client.host if request.client else 'unknown'}"

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness plus what each variant serves and the reco-log counters."""
        variants = await self.router.describe.remote()
        first = variants[0] if variants else {}
        return {
            "status": "ok",
            "model": first.get("model"),
            "version": first.get("version"),
            "variants": variants,
            "reco_log": self.reco_log.stats(),
        }

    @api.get(
        "/recommend/{user_id}",
        response_model=None,
        responses={
            200: {
                "description": "Text: `id1,id2,…`; JSON (`format=json`): items, variant, "
                "model, model_version, request_id, fallback, latency_ms.",
                "content": {"text/plain": {}, "application/json": {}},
            },
            429: {"description": "Rate limit exceeded; see the `Retry-After` header."},
            503: {
                "description": "No list could be produced yet (the service is starting and "
                "no model answered); retry after the `Retry-After` header's seconds."
            },
        },
    )
    async def recommend(
        self,
        request: Request,
        user_id: Annotated[
            str, Path(pattern=USER_ID_PATTERN, description="User id (1-64 of A-Z a-z 0-9 _ . -)")
        ],
        k: Annotated[
            int | None, Query(ge=1, le=100, description="List length (default 20)")
        ] = None,
        format: Annotated[
            Literal["text", "json"], Query(description="`text` (default) or `json`")
        ] = "text",
    ) -> Response:
        """Top-k movie ids for ``user_id``."""
        t0 = time.perf_counter()
        wait = self.limiter.acquire(self._limit_key(request, user_id))
        if wait > 0:
            self.m_limited.inc(tags={"key": self.limit_key})
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
        try:
            ans: Answer = await self.batcher.submit((user_id, k))
        except Exception:
            log.exception("router failed for %s; ingress fallback", user_id)
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
            fb: Answer = await self.fallback.recommend.remote(user_id, k)
            return fb.model_copy(update=update)
        except Exception:
            self.m_errors.inc(tags={"stage": "fallback"})
            return self.last_resort.answer(Answer.model_validate(update), k)

    @api.get("/trace/{request_id}")
    async def trace(
        self,
        who: Reader,
        request_id: Annotated[str, Path(pattern=REQUEST_ID_PATTERN)],
    ) -> dict[str, Any]:
        """Why a user got a list: the recorded answer of a recent request (reader role)."""
        rec = self.traces.get(request_id)
        if rec is None:
            raise HTTPException(404, f"request {request_id} is not among the recent answers")
        return rec

    # ---- admin ------------------------------------------------------------------------------
    @api.get("/admin/variants")
    async def list_variants(self, who: Reader) -> dict[str, Any]:
        """Slots with weight, traffic share, model and version; plus salt and deadline."""
        return {
            "variants": await self.router.describe.remote(),
            "config": await self.router.config.remote(),
        }

    @api.put("/admin/weights")
    async def put_weights(self, who: Admin, body: Annotated[WeightsBody, Body()]) -> dict[str, Any]:
        """Change A/B weights at once (sticky: users move only across shifted boundaries)."""
        try:
            new = await self.router.set_weights.remote(body.weights)
        except Exception as exc:
            raise HTTPException(400, _reason(exc)) from None
        audit.warning("admin %s (%s): set weights %s", who.name, who.role, new)
        return {"weights": new, "by": who.name}

    @api.post(
        "/admin/variants/{name}/model",
        responses={409: {"description": "Version refused (verification or load failed)."}},
    )
    async def switch_model(
        self,
        who: Admin,
        name: Annotated[str, Path(pattern=VARIANT_PATTERN)],
        body: Annotated[SwitchBody, Body()],
    ) -> dict[str, Any]:
        """Switch a slot to a verified registry version; on failure the old one keeps serving."""
        current = {v["name"]: v for v in await self.router.describe.remote()}
        if name not in current:
            raise HTTPException(404, f"unknown variant {name!r}; known: {sorted(current)}")
        model = body.model or current[name]["model"]
        try:
            info = await self.router.switch.remote(name, model, body.version)
        except Exception as exc:
            reason = _reason(exc)
            audit.warning(
                "admin %s: switch %s to %s %s REFUSED: %s",
                who.name,
                name,
                model,
                body.version,
                reason,
            )
            raise HTTPException(409, {"reason": reason, "still_serving": current[name]}) from None
        audit.warning(
            "admin %s (%s): switched variant %s from %s %s to %s %s",
            who.name,
            who.role,
            name,
            current[name]["model"],
            current[name]["version"],
            info["model"],
            info["version"],
        )
        return {"variant": name, "model": info["model"], "version": info["version"], "by": who.name}

    @api.post("/admin/reload")
    async def reload(self, who: Admin) -> dict[str, Any]:
        """Move every slot to its model's latest verified version (failures keep the old)."""
        result = await self.router.reload.remote()
        audit.warning("admin %s (%s): reload %s", who.name, who.role, result)
        return {"variants": result, "by": who.name}
