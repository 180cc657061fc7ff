"""A deployment that serves one registry model version (one per A/B slot, plus the fallback)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from ray_app.models.base import FallbackRanker, Recommender
from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import ModelVersion, Registry
from ray_app.serving.answer import Answer
from ray_app.serving.config import INTERNAL_DEPLOYMENT, updated_config
from ray_app.serving.watch import RegistryWatcher

log = logging.getLogger("ray.serve")


class ModelServerConfig(BaseModel):
    """A model server's ``user_config``: which version it serves and what it follows."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    version: str | None = None
    """Registry version to serve. At start None means ``follow``'s target, else the latest;
    on a live update None keeps the current one, and a version that fails verification or
    loading leaves the current one serving."""
    follow: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    """``latest``, an alias such as ``production``, or None; the slot switches (after
    verification) when that reference moves. See :mod:`ray_app.serving.watch`."""
    watch_interval_s: float = Field(default=0.0, ge=0.0)
    """Seconds between registry polls of ``follow``; 0 turns watching off."""


@serve.deployment(**INTERNAL_DEPLOYMENT)
class ModelServer:
    """Loads a verified registry version and answers top-k requests with :class:`Answer`.

    The constructor fixes where models come from (registry, signing) and the model name the
    slot starts with; the version and what it follows are hot knobs in ``user_config``
    (:class:`ModelServerConfig`), and the first ``reconfigure`` (before the replica takes
    traffic) loads the model.
    """

    def __init__(self, registry: str, signing: SigningConfig, model: str) -> None:
        self.registry = Registry(registry, signing)
        self.name = model
        self.settings: ModelServerConfig | None = None
        self.model: Recommender[Any] | None = None
        self.version: ModelVersion | None = None
        # Loading runs in a worker thread on switch; the lock keeps (model, version) consistent.
        self._lock = threading.Lock()
        self.watcher = RegistryWatcher(self._followed, self._current, self._swap)

    def _current(self) -> str:
        return self.version.version if self.version is not None else ""

    def _followed(self) -> tuple[str, str | None]:
        name, follow = self.name, self.settings.follow if self.settings else None
        return name, self.registry.resolve(name, follow) if follow else None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a :class:`ModelServerConfig`; the first call loads the model (or raises)."""
        old = self.settings
        new = updated_config(old, ModelServerConfig, user_config, f"ModelServer {self.name}")
        self.settings = new
        if self.model is None:
            version = new.version
            if version is None and new.follow and new.follow != "latest":
                version = self.registry.resolve(self.name, new.follow)  # None = latest
            self._swap(self.name, version)
        elif new.version and new.version != self._current():
            try:
                self._swap(self.name, new.version)
            except Exception:
                log.exception(
                    "could not load %s %s; still serving %s",
                    self.name,
                    new.version,
                    self._current(),
                )
        if old is not None and new.follow != old.follow:
            self.watcher.rebase()
        self.watcher.configure(new.watch_interval_s if new.follow else 0.0)

    def _swap(self, name: str, version: str | None) -> dict[str, Any]:
        # Verify and load into locals first: the old model keeps answering until the new one
        # is fully ready, then one reference swap makes it live (zero downtime).
        model, mv = self.registry.load(name, version)
        with self._lock:
            renamed = name != self.name
            self.model, self.version, self.name = model, mv, name
        if renamed:
            self.watcher.rebase()  # a different model's versions: start watching afresh
        log.info("serving %s %s", name, mv.version)
        return self.info()

    async def switch(self, name: str, version: str | None) -> dict[str, Any]:
        """Verify and load ``name``/``version`` (None = latest); raises and keeps the old on error."""
        return await asyncio.to_thread(self._swap, name, version)

    def info(self) -> dict[str, Any]:
        """Model name, version and offline metrics being served."""
        return {
            "model": self.name,
            "version": self._current() or None,
            "metrics": self.version.manifest.get("metrics", {}) if self.version else {},
            "follow": self.settings.follow if self.settings else None,
            "watch": self.watcher.state(),
        }

    def latest(self) -> str | None:
        """Latest registry version of the served model name (for reload)."""
        return self.registry.latest(self.name)

    async def recommend(self, user_id: str, k: int, exclude: list[str] | None = None) -> Answer:
        """Top-k for one user."""
        return (await self.recommend_batch([user_id], [k], [exclude or []]))[0]

    async def recommend_batch(
        self, user_ids: list[str], ks: list[int], excludes: list[list[str]] | None = None
    ) -> list[Answer]:
        """:meth:`recommend` for many users in one model call (the router batches requests).

        One vectorised ``model.recommend`` scores the whole batch, so a batch of n users costs
        one actor call instead of n. A user the model cannot score gets the model's
        :class:`FallbackRanker` list if it has one, else an empty list (``known_user`` False).
        """
        with self._lock:
            model, mv, name = self.model, self.version, self.name
        if model is None or mv is None:
            raise RuntimeError(f"ModelServer {name}: no model loaded (reconfigure never ran)")
        ex = excludes or [[] for _ in user_ids]
        depth = max(k + len(e) for k, e in zip(ks, ex, strict=True))
        rec = model.recommend(user_ids, k=depth, exclude_seen=True)
        out = []
        for i, (k, drop_list) in enumerate(zip(ks, ex, strict=True)):
            drop = set(drop_list)
            known = bool(rec.known[i])
            if known:
                items = [it for it in rec.items[i] if it not in drop][:k]
            elif isinstance(model, FallbackRanker):
                items = model.top_items(k, exclude=drop)[:k]
            else:
                items = []
            out.append(Answer(items=items, model=name, model_version=mv.version, known_user=known))
        return out
