"""Application builder used by ``serve_config.yaml`` (``import_path: ray_app.serving.app:build_app``).

Graph: ``Ingress`` → ``ABRouter`` → one ``ModelServer`` per variant (``variant-<name>``) and the
``fallback`` model server → ``ReRanker``. Each value goes in once: what cannot change at run
time as a constructor argument, hot knobs in the deployment's ``user_config`` (one pydantic
model per deployment, applied by its ``reconfigure``).
"""

from __future__ import annotations

from typing import Any, cast

from ray.serve import Application, Deployment

from ray_app.serving.config import ServeArgs
from ray_app.serving.ingress import Ingress, IngressConfig, IngressSettings
from ray_app.serving.model_server import ModelServer, ModelServerConfig
from ray_app.serving.reranker import ReRanker, ReRankerConfig
from ray_app.serving.router import ABRouter, RouterConfig

# ``@serve.deployment`` turns the classes into Deployments; mypy still sees the classes.
_MODEL = cast(Deployment, ModelServer)
_RERANK = cast(Deployment, ReRanker)
_ROUTER = cast(Deployment, ABRouter)
_INGRESS = cast(Deployment, Ingress)


def build_app(args: dict[str, Any] | ServeArgs | None = None) -> Application:
    """Wire the deployments with ``.bind()`` from validated :class:`ServeArgs`."""
    a = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args or {})
    where = {"registry": a.registry, "signing": a.signing}
    fresh = {"state": a.state}
    variants = {
        v.name: _MODEL.options(
            name=f"variant-{v.name}",
            user_config=ModelServerConfig(
                version=v.version, follow=v.follow, watch_interval_s=a.watch_interval_s
            ).model_dump(),
        ).bind(model=v.model, **where, **fresh)
        for v in a.variants
    }
    fallback = _MODEL.options(name="fallback", user_config=ModelServerConfig().model_dump()).bind(
        model=a.fallback_model, **where, **fresh
    )
    rerank_config = ReRankerConfig(
        diversity=a.diversity, novelty=a.novelty, popularity_model=a.fallback_model
    )
    reranker = _RERANK.options(user_config=rerank_config.model_dump()).bind(**where)
    router_config = RouterConfig(
        weights={v.name: v.weight for v in a.variants},
        salt=a.experiment_salt,
        deadline_s=a.deadline_s,
    )
    router = _ROUTER.options(user_config=router_config.model_dump()).bind(
        variants=variants, fallback=fallback, reranker=reranker
    )
    batching = IngressConfig(
        max_batch_size=a.max_batch_size, max_batches_in_flight=a.max_batches_in_flight
    )
    return _INGRESS.options(user_config=batching.model_dump()).bind(
        router=router, fallback=fallback, settings=IngressSettings.from_args(a)
    )
