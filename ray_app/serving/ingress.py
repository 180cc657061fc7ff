"""HTTP ingress (FastAPI): ``/recommend/{user_id}`` and ``/healthz``."""

# No `from __future__ import annotations` here: FastAPI must see the real Annotated[...] types
# of route parameters, which Serve re-binds on the replica class.

import logging
import time
import uuid
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

log = logging.getLogger("ray.serve")

USER_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"

api = FastAPI(
    title="ray_app recommendations",
    description=(
        "`GET /recommend/{user_id}` answers one line of comma-separated movie ids, best first "
        "(the course platforms' contract); `?format=json` adds model, version and request id."
    ),
    version="0.1.0",
)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class Ingress:
    """Routes a request to the primary model, falling back to popularity; never a 5xx."""

    def __init__(
        self, primary: DeploymentHandle, fallback: DeploymentHandle, default_k: int = 20
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.default_k = default_k

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness plus what is being served."""
        info = await self.primary.info.remote()
        return {"status": "ok", "model": info["model"], "version": info["version"]}

    @api.get("/recommend/{user_id}", response_model=None)
    async def recommend(
        self,
        user_id: Annotated[
            str, Path(pattern=USER_ID_PATTERN, description="User id (1-64 of A-Z a-z 0-9 _ . -)")
        ],
        k: Annotated[
            int | None, Query(ge=1, le=100, description="List length (default 20)")
        ] = None,
        format: Annotated[
            Literal["text", "json"], Query(description="`text` (default) or `json`")
        ] = "text",
    ) -> PlainTextResponse | JSONResponse:
        """Top-k movie ids for ``user_id``."""
        t0 = time.perf_counter()
        request_id = uuid.uuid4().hex
        kk = k or self.default_k
        fallback_used = False
        try:
            ans = await self.primary.recommend.remote(user_id, kk)
        except Exception:
            log.exception("primary model failed for %s; falling back", user_id)
            ans = {"items": [], "known": False}
        items: list[str] = list(ans["items"])
        if len(items) < kk:
            # Unknown user, or too few neighbours: pad with popular unseen movies.
            fb = await self.fallback.recommend.remote(user_id, kk - len(items), items)
            fallback_used = True
            items += fb["items"]
            if not ans.get("items"):
                ans = fb  # the fallback answered on its own: report its model and version
        latency_ms = (time.perf_counter() - t0) * 1000
        if format == "json":
            return JSONResponse(
                {
                    "user_id": user_id,
                    "items": items,
                    "model": ans.get("model"),
                    "model_version": ans.get("version"),
                    "known_user": bool(ans.get("known")),
                    "fallback": fallback_used,
                    "request_id": request_id,
                    "latency_ms": round(latency_ms, 3),
                }
            )
        return PlainTextResponse(",".join(items))
