"""Application builder used by ``serve_config.yaml`` (``import_path: ray_app.serving.app:build_app``).

Graph: ``Ingress`` → ``ABRouter`` → one ``ModelServer`` per variant (``variant-<name>``) and the
popularity ``fallback`` → ``ReRanker``.
"""

from __future__ import annotations

from typing import Any, cast

from ray.serve import Application, Deployment

from ray_app.serving.config import ServeArgs
from ray_app.serving.ingress import Ingress
from ray_app.serving.model_server import ModelServer
from ray_app.serving.reranker import ReRanker
from ray_app.serving.router import ABRouter

# ``@serve.deployment`` turns the classes into Deployments; mypy still sees the classes.
_MODEL = cast(Deployment, ModelServer)
_RERANK = cast(Deployment, ReRanker)
_ROUTER = cast(Deployment, ABRouter)
_INGRESS = cast(Deployment, Ingress)


def build_app(args: dict[str, Any] | ServeArgs | None = None) -> Application:
    """Wire the deployments with ``.bind()``; hot knobs go in each one's ``user_config``."""
    a = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(args or {})
    signing = a.signing
    variants = {
        v.name: _MODEL.options(
            name=f"variant-{v.name}",
            user_config={
                "fault_injection": dict(v.fault_injection),
                "follow": v.follow,
                "watch_interval_s": a.watch_interval_s,
            },
        ).bind(a.registry, v.model, v.version, signing, v.follow)
        for v in a.variants
    }
    fallback = _MODEL.options(name="fallback").bind(a.registry, a.fallback_model, None, signing)
    reranker = _RERANK.options(user_config={"diversity": a.diversity}).bind(
        a.registry, signing, a.diversity
    )
    weights = {v.name: v.weight for v in a.variants}
    router = _ROUTER.options(
        user_config={"weights": weights, "salt": a.experiment_salt, "deadline_s": a.deadline_s}
    ).bind(variants, fallback, reranker, weights, a.experiment_salt, a.deadline_s)
    batching = {
        "max_batch_size": a.max_batch_size,
        "max_batches_in_flight": a.max_batches_in_flight,
    }
    return _INGRESS.options(user_config=batching).bind(router, fallback, a)
