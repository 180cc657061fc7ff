"""The bearer-protected routes of the ingress: status, traces and the admin API.

``reader`` may read (``/admin/status``, ``/admin/variants``, ``/trace/{id}``); ``admin`` may
change weights and models. Every refused credential is logged with the path and the client's
address (and the principal when the token was known), every change with the principal.
"""

# No `from __future__ import annotations` here: FastAPI must see the real Annotated[...] types.

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from ray.serve.handle import DeploymentHandle

from ray_app.serving import security
from ray_app.serving.config import Weight
from ray_app.serving.last_resort import LastResort
from ray_app.serving.provenance import RecoLogger, TraceStore
from ray_app.serving.security import Principal, allows, public_reason

# A child of Serve's logger, so admin changes land in the replica log files Serve writes.
audit = logging.getLogger("ray.serve.audit")

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,64}$"
VARIANT_PATTERN = r"^[A-Za-z0-9_\-]{1,32}$"
VERSION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"


class ErrorBody(BaseModel):
    """Every error answer: one line saying what was wrong."""

    detail: str


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error codes a route can answer, plus those any
    route can: 400 (an unexpected error, refused), 408 (the proxy's request timeout) and 431."""
    what = {
        400: "Request refused (invalid value).",
        401: "Missing or unknown bearer token (`WWW-Authenticate: Bearer`).",
        403: "The token's role does not allow this route.",
        404: "Not found.",
        408: "The request took longer than the proxy's `request_timeout_s`.",
        409: "Refused: the current state stays (see `detail`).",
        429: "Rate limit or quota exceeded; retry after the `Retry-After` header's seconds.",
        431: "Request headers too large.",
        503: "Not ready; retry after the `Retry-After` header's seconds.",
    }
    return {
        c: {"model": ErrorBody, "description": what[c]} for c in sorted({400, 408, 431, *codes})
    }


bearer = HTTPBearer(auto_error=False, description="API key (stored server-side as SHA-256).")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _principal(
    request: Request,
    cred: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    if cred is None or not cred.credentials:
        audit.warning("refused %s from %s: no bearer token", request.url.path, _client(request))
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    p = security.STATE.keys.lookup(cred.credentials)
    if p is None:
        audit.warning(
            "refused %s from %s: unknown bearer token", request.url.path, _client(request)
        )
        raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
    return p


def _need(role: str, request: Request, p: Principal) -> Principal:
    if not allows(p, role):
        audit.warning(
            "refused %s from %s: %s (%s) lacks role %s",
            request.url.path,
            _client(request),
            p.name,
            p.role,
            role,
        )
        raise HTTPException(403, f"{p.name!r} has role {p.role!r}; this needs {role!r}")
    return p


def _need_admin(request: Request, p: Annotated[Principal, Depends(_principal)]) -> Principal:
    return _need("admin", request, p)


def _need_reader(request: Request, p: Annotated[Principal, Depends(_principal)]) -> Principal:
    return _need("reader", request, p)


Admin = Annotated[Principal, Depends(_need_admin)]
Reader = Annotated[Principal, Depends(_need_reader)]


class WeightsBody(BaseModel):
    """New A/B weights: every slot not named gets 0."""

    model_config = ConfigDict(extra="forbid")
    weights: dict[Annotated[str, Field(pattern=VARIANT_PATTERN)], Weight] = Field(
        max_length=64, examples=[{"A": 0.9, "B": 0.1}]
    )


class SwitchBody(BaseModel):
    """Registry model and version for a slot; ``version`` null = latest, ``model`` null = same."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(default=None, pattern=VERSION_PATTERN)
    version: str | None = Field(default=None, pattern=VERSION_PATTERN)


class Refusal(BaseModel):
    """Why a switch was refused, and what the slot still serves."""

    reason: str
    still_serving: dict[str, str | None]


class SwitchRefused(BaseModel):
    """The 409 answer of a refused switch."""

    detail: Refusal


admin_api = APIRouter()


class AdminRoutes:
    """The ingress's bearer-protected routes (the ingress class inherits them; Serve binds
    them to the replica like its own)."""

    router: DeploymentHandle
    traces: TraceStore
    reco_log: RecoLogger
    last_resort: LastResort

    @admin_api.get("/trace/{request_id}", responses=errors(401, 403, 404))
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

    @admin_api.get("/admin/status", responses=errors(401, 403))
    async def status(self, who: Reader) -> dict[str, Any]:
        """What each variant serves (weight, version, counts, watch state), the reco-log
        counters and the last-resort list's version (reader role)."""
        variants = await self.router.describe.remote()
        first = variants[0] if variants else {}
        return {
            "status": "ok",
            "model": first.get("model"),
            "version": first.get("version"),
            "variants": variants,
            "reco_log": self.reco_log.stats(),
            "last_resort_version": self.last_resort.version,
        }

    @admin_api.get("/admin/variants", responses=errors(401, 403))
    async def list_variants(self, who: Reader) -> dict[str, Any]:
        """Slots with weight, traffic share, model and version; plus salt and deadline."""
        return {
            "variants": await self.router.describe.remote(),
            "config": await self.router.config.remote(),
        }

    @admin_api.put("/admin/weights", responses=errors(400, 401, 403))
    async def put_weights(self, who: Admin, body: Annotated[WeightsBody, Body()]) -> dict[str, Any]:
        """Change A/B weights at once (sticky: users move only across shifted boundaries)."""
        try:
            new = await self.router.set_weights.remote(body.weights)
        except Exception as exc:
            raise HTTPException(400, public_reason(exc)) from None
        audit.warning("admin %s (%s): set weights %s", who.name, who.role, new)
        return {"weights": new, "by": who.name}

    @admin_api.post(
        "/admin/variants/{name}/model",
        responses={
            **errors(401, 403, 404),
            409: {"model": SwitchRefused, "description": "Version refused; the old one serves."},
        },
    )
    async def switch_model(
        self,
        who: Admin,
        name: Annotated[str, Path(pattern=VARIANT_PATTERN)],
        body: Annotated[SwitchBody, Body()],
    ) -> Any:
        """Switch a slot to a verified registry version; on failure the old one keeps serving."""
        current = {v["name"]: v for v in await self.router.describe.remote()}
        if name not in current:
            raise HTTPException(404, f"unknown variant {name!r}; known: {sorted(current)}")
        was = {"model": current[name]["model"], "version": current[name]["version"]}
        model = body.model or was["model"]
        try:
            info = await self.router.switch.remote(name, model, body.version)
        except Exception as exc:
            reason = public_reason(exc)
            audit.warning(
                "admin %s: switch %s to %s %s REFUSED: %s",
                who.name,
                name,
                model,
                body.version,
                reason,
            )
            refused = SwitchRefused(detail=Refusal(reason=reason, still_serving=was))
            return JSONResponse(refused.model_dump(), status_code=409)
        audit.warning(
            "admin %s (%s): switched variant %s from %s %s to %s %s",
            who.name,
            who.role,
            name,
            was["model"],
            was["version"],
            info["model"],
            info["version"],
        )
        return {"variant": name, "model": info["model"], "version": info["version"], "by": who.name}

    @admin_api.post("/admin/reload", responses=errors(401, 403))
    async def reload(self, who: Admin) -> dict[str, Any]:
        """Move every slot to its model's latest verified version (failures keep the old; each
        failure is one line in its slot's ``error``)."""
        result = await self.router.reload.remote()
        audit.warning("admin %s (%s): reload %s", who.name, who.role, result)
        return {"variants": result, "by": who.name}
