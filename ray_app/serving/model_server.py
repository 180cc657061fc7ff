"""A deployment that serves one registry model version."""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import Registry

log = logging.getLogger("ray.serve")


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.25})
class ModelServer:
    """Loads a verified registry version and answers batched top-k requests.

    ``user_config`` may carry ``{"version": "v…"}`` to switch versions without a restart; a
    version that fails verification or loading leaves the current one serving.
    """

    def __init__(
        self, registry: str, name: str, version: str | None, signing: SigningConfig
    ) -> None:
        self.registry = Registry(registry, signing)
        self.name = name
        self.model, self.version = self._load(version)

    def _load(self, version: str | None) -> tuple[Any, Any]:
        model, mv = self.registry.load(self.name, version)
        log.info("serving %s %s", self.name, mv.version)
        return model, mv

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        want = user_config.get("version")
        if want and want != self.version.version:
            try:
                self.model, self.version = self._load(want)
            except Exception:
                log.exception(
                    "could not load %s %s; still serving %s", self.name, want, self.version.version
                )

    def info(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "version": self.version.version,
            "metrics": self.version.manifest.get("metrics", {}),
        }

    def recommend(self, user_id: str, k: int, exclude: list[str] | None = None) -> dict[str, Any]:
        """Top-k for one user: ``{"items", "scores", "known", "model", "version"}``."""
        extra = len(exclude) if exclude else 0
        rec = self.model.recommend([user_id], k=k + extra, exclude_seen=True)
        items, scores = rec.items[0], rec.scores[0]
        if exclude:
            drop = set(exclude)
            kept = [(i, s) for i, s in zip(items, scores, strict=True) if i not in drop]
            items, scores = [i for i, _ in kept], [s for _, s in kept]
        known = bool(rec.known[0])
        if not known and hasattr(self.model, "top_items"):
            items = self.model.top_items(k + extra, exclude=set(exclude or []))
            scores = [0.0] * len(items)
        return {
            "items": items[:k],
            "scores": scores[:k],
            "known": known,
            "model": self.name,
            "version": self.version.version,
        }
