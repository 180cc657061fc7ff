"""A deployment that serves one registry model version (one per A/B slot, plus the fallback)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from ray import serve

from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import Registry
from ray_app.serving.config import INTERNAL_DEPLOYMENT
from ray_app.serving.watch import RegistryWatcher

log = logging.getLogger("ray.serve")


@serve.deployment(**INTERNAL_DEPLOYMENT)
class ModelServer:
    """Loads a verified registry version and answers top-k requests.

    ``user_config`` keys:

    * ``version``: switch to this registry version without a restart; a version that fails
      verification or loading leaves the current one serving.
    * ``follow``: ``latest``, an alias such as ``production``, or null; with
      ``watch_interval_s`` > 0 the slot polls the registry and switches (after verification)
      when that reference moves. See :mod:`ray_app.serving.watch`.
    * ``watch_interval_s``: seconds between registry polls; 0 turns watching off.
    * ``fault_injection`` (test-only, off by default): ``{"raise": true}`` makes every
      ``recommend`` raise, ``{"sleep_s": 2.0}`` delays it — used to prove the router's fallback.
    """

    def __init__(
        self,
        registry: str,
        name: str,
        version: str | None,
        signing: SigningConfig,
        follow: str | None = None,
    ) -> None:
        self.registry = Registry(registry, signing)
        self.name = name
        self.fault: dict[str, Any] = {}
        self.follow = follow
        # Loading runs in a worker thread on switch; the lock keeps (model, version) consistent.
        self._lock = threading.Lock()
        if version is None and follow and follow != "latest":
            version = self.registry.resolve(name, follow)  # e.g. production; None = latest
        self.model, self.version = self._load(version)
        self.watcher = RegistryWatcher(self._followed, lambda: self.version.version, self._swap)

    def _followed(self) -> tuple[str, str | None]:
        name, follow = self.name, self.follow
        return name, self.registry.resolve(name, follow) if follow else None

    def _load(self, version: str | None) -> tuple[Any, Any]:
        model, mv = self.registry.load(self.name, version)
        log.info("serving %s %s", self.name, mv.version)
        return model, mv

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``version`` / ``follow`` / ``watch_interval_s`` / ``fault_injection``."""
        self.fault = dict(user_config.get("fault_injection") or {})
        if "follow" in user_config and user_config["follow"] != self.follow:
            self.follow = user_config["follow"]
            self.watcher.rebase()
        self.watcher.configure(
            float(user_config.get("watch_interval_s", 0.0)) if self.follow else 0.0
        )
        want = user_config.get("version")
        if want and want != self.version.version:
            try:
                self._swap(self.name, want)
            except Exception:
                log.exception(
                    "could not load %s %s; still serving %s", self.name, want, self.version.version
                )

    def _swap(self, name: str, version: str | None) -> dict[str, Any]:
        # Verify and load into locals first: the old model keeps answering until the new one
        # is fully ready, then one reference swap makes it live (zero downtime).
        registry_name = name
        model, mv = self.registry.load(registry_name, version)
        with self._lock:
            renamed = registry_name != self.name
            self.model, self.version, self.name = model, mv, registry_name
        if renamed:
            self.watcher.rebase()  # a different model's versions: start watching afresh
        log.info("switched to %s %s", registry_name, mv.version)
        return self.info()

    async def switch(self, name: str, version: str | None) -> dict[str, Any]:
        """Verify and load ``name``/``version`` (None = latest); raises and keeps the old on error."""
        return await asyncio.to_thread(self._swap, name, version)

    def info(self) -> dict[str, Any]:
        """Model name, version and offline metrics being served."""
        return {
            "model": self.name,
            "version": self.version.version,
            "metrics": self.version.manifest.get("metrics", {}),
            "follow": self.follow,
            "watch": self.watcher.state(),
        }

    def latest(self) -> str | None:
        """Latest registry version of the served model name (for reload)."""
        return self.registry.latest(self.name)

    async def recommend(
        self, user_id: str, k: int, exclude: list[str] | None = None
    ) -> dict[str, Any]:
        """Top-k for one user: ``{"items", "scores", "known", "model", "version"}``."""
        return (await self.recommend_batch([user_id], [k], [exclude or []]))[0]

    async def recommend_batch(
        self, user_ids: list[str], ks: list[int], excludes: list[list[str]] | None = None
    ) -> list[dict[str, Any]]:
        """:meth:`recommend` for many users in one model call (the router batches requests).

        One vectorised ``model.recommend`` scores the whole batch, so a batch of n users costs
        one actor call instead of n.
        """
        if self.fault.get("raise"):
            raise RuntimeError(f"fault injection: {self.name} raises")
        if self.fault.get("sleep_s"):
            await asyncio.sleep(float(self.fault["sleep_s"]))
        with self._lock:
            model, mv, name = self.model, self.version, self.name
        ex = excludes or [[] for _ in user_ids]
        depth = max(k + len(e) for k, e in zip(ks, ex, strict=True))
        rec = model.recommend(user_ids, k=depth, exclude_seen=True)
        out = []
        for i, (k, drop_list) in enumerate(zip(ks, ex, strict=True)):
            drop = set(drop_list)
            known = bool(rec.known[i])
            if known:
                pairs = [
                    (it, float(sc))
                    for it, sc in zip(rec.items[i], rec.scores[i], strict=True)
                    if it not in drop
                ][:k]
                items, scores = [it for it, _ in pairs], [sc for _, sc in pairs]
            elif hasattr(model, "top_items"):
                items = model.top_items(k, exclude=drop)[:k]
                scores = [0.0] * len(items)
            else:
                items, scores = [], []
            out.append(
                {
                    "items": items,
                    "scores": scores,
                    "known": known,
                    "model": name,
                    "version": mv.version,
                }
            )
        return out
