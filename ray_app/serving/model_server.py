"""A deployment that serves one registry model version (one per A/B slot, plus the fallback)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.metrics import Counter, Histogram

from ray_app.models.base import FallbackRanker, HistoryScorer, Recommender
from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import ModelVersion, Registry
from ray_app.serving.answer import Answer
from ray_app.serving.cache import CacheKey, RecommendationCache, history_signature
from ray_app.serving.config import INTERNAL_DEPLOYMENT, updated_config
from ray_app.serving.watch import RegistryWatcher
from ray_app.state.config import StateConfig
from ray_app.state.open_store import open_store
from ray_app.state.store import HistoryItem, StateStore

log = logging.getLogger("ray.serve")

STATE_RETRY_S = 10.0
"""After the state store could not be opened, wait this long before trying again."""
TRENDING_REFRESH_S = 1.0
"""How often a model server re-reads the trending items (one store call, shared by requests)."""
TRENDING_DEPTH = 200
"""Trending items read at most."""


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
    allow_downgrade: bool = False
    """Let ``follow`` and a reload to the latest version move the slot to a version older (by
    its signed creation time) than the one serving; a switch naming a version is always
    explicit and never refused for this."""
    cache: bool = True
    """Keep recent answers (:mod:`ray_app.serving.cache`): reused only for the same model
    version and an unchanged fresh history, so never staler than the state store."""
    cache_ttl_s: float = Field(default=60.0, gt=0.0)
    """Longest a cached answer is reused."""
    cache_entries: int = Field(default=100_000, ge=1)
    """Most answers kept (least recently used go first)."""
    trending: bool = True
    """With a state store, a :class:`FallbackRanker` model (popularity) answers users it
    cannot score with the trending items first (time-decayed counts, seconds old), then its
    own ranking: a newly popular movie is visible before the next retrain."""
    trending_min_count: float = Field(default=5.0, gt=0.0)
    """Decayed count (about: distinct recent viewers) an item needs to count as trending."""


@serve.deployment(**INTERNAL_DEPLOYMENT)
class ModelServer:
    """Loads a verified registry version and answers top-k requests with :class:`Answer`.

    The constructor fixes where models come from (registry, signing) and the model name the
    slot starts with; the version and what it follows are hot knobs in ``user_config``
    (:class:`ModelServerConfig`), and the first ``reconfigure`` (before the replica takes
    traffic) loads the model.
    """

    def __init__(
        self,
        registry: str,
        signing: SigningConfig,
        model: str,
        state: StateConfig | None = None,
    ) -> None:
        self.registry = Registry(registry, signing)
        self.name = model
        # Fresh user history (see ray_app.state): opened on first use, never blocking startup.
        self.state_config = state
        self._store: StateStore | None = None
        self._store_failed_at = -STATE_RETRY_S
        self._cache: RecommendationCache | None = None
        self._trending: list[str] = []
        self._trending_at = -TRENDING_REFRESH_S
        self._trending_gen = 0
        lookup_tags: Any = ("model", "result")  # Ray annotates tag_keys as a 1-tuple
        self.m_cache = Counter(
            "app_cache_lookups",
            description="Hot-recommendation cache lookups by result (hit ratio: hit / all).",
            tag_keys=lookup_tags,
        )
        self.m_cache_ms = Histogram(
            "app_cache_lookup_ms",
            description="Time to look a batch up in the hot-recommendation cache (ms).",
            boundaries=[0.01, 0.05, 0.1, 0.5, 1, 5, 10],
            tag_keys=("model",),
        )
        self.settings: ModelServerConfig | None = None
        self.model: Recommender[Any] | None = None
        self.version: ModelVersion | None = None
        # Loading runs in a worker thread on switch; the lock keeps (model, version) consistent.
        self._lock = threading.Lock()
        self.watcher = RegistryWatcher(
            self._followed, self._current, self._swap, registry=self.registry
        )

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
        if not new.cache:
            self._cache = None
        elif self._cache is None or (new.cache_ttl_s, new.cache_entries) != (
            self._cache.ttl_s,
            self._cache.max_entries,
        ):
            self._cache = RecommendationCache(new.cache_ttl_s, new.cache_entries)
        if old is not None and new.follow != old.follow:
            self.watcher.rebase()
        self.watcher.configure(
            new.watch_interval_s if new.follow else 0.0, allow_downgrade=new.allow_downgrade
        )

    def _swap(self, name: str, version: str | None) -> dict[str, Any]:
        # Verify and load into locals first: the old model keeps answering until the new one
        # is fully ready, then one reference swap makes it live (zero downtime).
        # "the latest" of the model already served must not be older than what serves
        serving = self._current() if version is None and name == self.name else ""
        allow = self.settings.allow_downgrade if self.settings else False
        model, mv = self.registry.load(
            name, version, serving=serving or None, allow_downgrade=allow
        )
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
            "state": self.state_config.kind if self.state_config else None,
            "cache": self._cache.stats() if self._cache else None,
        }

    def latest(self) -> str | None:
        """Latest registry version of the served model name (for reload)."""
        return self.registry.latest(self.name)

    def _state_store(self) -> StateStore | None:
        if self.state_config is None or self._store is not None:
            return self._store
        if time.monotonic() - self._store_failed_at < STATE_RETRY_S:
            return None
        try:
            self._store = open_store(self.state_config)
        except Exception:
            self._store_failed_at = time.monotonic()
            log.warning("state store unavailable; answering without fresh history", exc_info=True)
        return self._store

    async def _histories(self, user_ids: list[str]) -> list[list[HistoryItem]]:
        """Each user's fresh history (newest first); empty lists when there is no store or it
        did not answer within its ``timeout_s`` (the request still answers)."""
        store = self._state_store()
        if store is None:
            return [[] for _ in user_ids]
        cfg = self.state_config
        assert cfg is not None
        try:
            got = await asyncio.wait_for(store.histories_async(user_ids), timeout=cfg.timeout_s)
        except TimeoutError:
            log.warning("state store slower than %.2fs; answering without it", cfg.timeout_s)
            return [[] for _ in user_ids]
        except Exception:
            # A dead store (its actor's node went away) is opened again after STATE_RETRY_S.
            log.warning("state store read failed; answering without fresh history", exc_info=True)
            self._store, self._store_failed_at = None, time.monotonic()
            return [[] for _ in user_ids]
        return got

    async def _trending_items(self, model: Recommender[Any]) -> list[str]:
        """The trending items (best first) when this server answers with trending, refreshed at
        most every :data:`TRENDING_REFRESH_S`; ``_trending_gen`` moves when they change."""
        settings = self.settings
        store = self._state_store()
        cfg = self.state_config
        if store is None or cfg is None or settings is None or not settings.trending:
            return []
        if not isinstance(model, FallbackRanker):
            return []
        if time.monotonic() - self._trending_at < TRENDING_REFRESH_S:
            return self._trending
        self._trending_at = time.monotonic()
        try:
            top = await asyncio.wait_for(
                asyncio.to_thread(store.trending, TRENDING_DEPTH, time.time()),
                timeout=cfg.timeout_s,
            )
        except Exception:
            log.warning("trending read failed; keeping the last list", exc_info=True)
            return self._trending
        items = [i for i, c in top if c >= settings.trending_min_count]
        if items != self._trending:
            self._trending, self._trending_gen = items, self._trending_gen + 1
        return self._trending

    async def recommend(self, user_id: str, k: int, exclude: list[str] | None = None) -> Answer:
        """Top-k for one user."""
        return (await self.recommend_batch([user_id], [k], [exclude or []]))[0]

    async def recommend_batch(
        self, user_ids: list[str], ks: list[int], excludes: list[list[str]] | None = None
    ) -> list[Answer]:
        """:meth:`recommend` for many users in one model call (the router batches requests).

        One vectorised ``model.recommend`` scores the whole batch, so a batch of n users costs
        one actor call instead of n. With a state store, each user's fresh history (watched and
        rated items, seconds old) is never recommended, and a :class:`HistoryScorer` model
        scores users who have one from it, folded into what it was trained on: a user unknown
        at training time gets a personal list after one event. A user the model cannot score
        gets the model's :class:`FallbackRanker` list if it has one, else an empty list
        (``known_user`` False).

        Answers come from the hot-recommendation cache when it is on and still valid (same
        model version, unchanged fresh history); only the rest are scored.
        """
        with self._lock:
            model, mv, name = self.model, self.version, self.name
        if model is None or mv is None:
            raise RuntimeError(f"ModelServer {name}: no model loaded (reconfigure never ran)")
        ex_in = excludes or [[] for _ in user_ids]
        histories = await self._histories(user_ids)
        trending = await self._trending_items(model)
        signatures = [history_signature(h) for h in histories]
        cache = self._cache
        out: list[Answer | None] = [None] * len(user_ids)
        keys: list[CacheKey] = []
        if cache is not None:
            t0 = time.perf_counter()
            for i, user in enumerate(user_ids):
                # The trending generation is part of the version: a new trending list makes
                # every cached fallback answer a miss.
                version = f"{mv.version}+t{self._trending_gen}" if trending else mv.version
                keys.append((user, ks[i], tuple(sorted(ex_in[i])), name, version))
                out[i] = cache.get(keys[i], signatures[i])
            self.m_cache_ms.observe((time.perf_counter() - t0) * 1000, tags={"model": name})
            hits = sum(a is not None for a in out)
            for result, n in (("hit", hits), ("miss", len(out) - hits)):
                if n:  # Ray's Counter refuses an increment of 0
                    self.m_cache.inc(n, tags={"model": name, "result": result})
        todo = [i for i, a in enumerate(out) if a is None]
        if todo:
            scored = self._score(
                model,
                name,
                mv.version,
                [user_ids[i] for i in todo],
                [ks[i] for i in todo],
                [ex_in[i] for i in todo],
                [[h.item_id for h in histories[i]] for i in todo],
                trending,
            )
            for i, answer in zip(todo, scored, strict=True):
                out[i] = answer
                if cache is not None:
                    cache.put(keys[i], signatures[i], answer)
        return [a for a in out if a is not None]

    @staticmethod
    def _score(
        model: Recommender[Any],
        name: str,
        version: str,
        user_ids: list[str],
        ks: list[int],
        excludes: list[list[str]],
        fresh: list[list[str]],
        trending: list[str],
    ) -> list[Answer]:
        """Score a batch: the trained path, with fresh history folded in where there is one;
        ``trending`` items lead a :class:`FallbackRanker`'s list for users it cannot score."""
        ex = [[*e, *h] for e, h in zip(excludes, fresh, strict=True)]
        depth = max(k + len(e) for k, e in zip(ks, ex, strict=True))
        rec = model.recommend(user_ids, k=depth, exclude_seen=True)
        with_history = [i for i, h in enumerate(fresh) if h]
        if with_history and isinstance(model, HistoryScorer):
            folded = model.recommend_from_history(
                [user_ids[i] for i in with_history],
                [fresh[i] for i in with_history],
                k=max(ks[i] for i in with_history),
                exclude=[ex[i] for i in with_history],
            )
            for j, i in enumerate(with_history):
                if folded.known[j]:
                    rec.items[i], rec.known[i] = folded.items[j], True
        out = []
        for i, (k, drop_list) in enumerate(zip(ks, ex, strict=True)):
            drop = set(drop_list)
            known = bool(rec.known[i])
            if known:
                items = [it for it in rec.items[i] if it not in drop][:k]
            elif isinstance(model, FallbackRanker):
                items = [it for it in trending if it not in drop][:k]
                if len(items) < k:
                    items += model.top_items(k - len(items), exclude=drop | set(items))
            else:
                items = []
            out.append(Answer(items=items, model=name, model_version=version, known_user=known))
        return out
