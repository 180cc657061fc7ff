"""Sticky A/B router: assigns a user to a variant, calls it under a deadline, falls back, re-ranks."""

from __future__ import annotations

import asyncio
import bisect
import collections
import hashlib
import logging
import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter

from ray_app.serving.answer import Answer
from ray_app.serving.breaker import Breaker
from ray_app.serving.config import INTERNAL_DEPLOYMENT, Weight, updated_config
from ray_app.serving.security import public_reason

log = logging.getLogger("ray.serve")


def assign(user_id: str, salt: str, weights: Mapping[str, float]) -> str:
    """The variant of ``user_id``: a stable hash of ``salt:user`` placed on the weight line.

    SHA-256 (not Python's per-process ``hash``) so every replica and every restart agrees; the
    salt lets a new experiment re-randomise users. Variants keep their declared order, so a
    weight change moves only the users near the shifted boundaries.
    """
    names = [n for n, w in weights.items() if w > 0]
    total = sum(weights[n] for n in names)
    if not names or total <= 0:
        raise ValueError("no variant has a positive weight")
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    cum: list[float] = []
    acc = 0.0
    for n in names:
        acc += weights[n] / total
        cum.append(acc)
    return names[min(bisect.bisect_right(cum, u), len(names) - 1)]


def validate_weights(weights: Mapping[str, float], known: list[str]) -> dict[str, float]:
    """Weights for exactly the known slots, each a finite number ≥ 0, some > 0; ValueError
    saying what is wrong (a NaN would send every user to the last slot, an infinity or an
    overflowing sum would make every share NaN)."""
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {known}")
    bad = [n for n, w in weights.items() if isinstance(w, bool) or not isinstance(w, int | float)]
    if bad:
        raise ValueError(f"weights must be numbers; not for {sorted(bad)}")
    out = {n: float(weights.get(n, 0.0)) for n in known}
    if not all(math.isfinite(w) and 0 <= w <= 1e6 for w in out.values()):
        raise ValueError("weights must be finite numbers from 0 to 1e6")
    if sum(out.values()) <= 0:
        raise ValueError("at least one weight must be > 0")
    return out


class RouterConfig(BaseModel):
    """The router's ``user_config``: the experiment's hot knobs.

    Validated with ``context={"slots": [...]}``, the weights must name only known slots.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    weights: dict[str, Weight]
    """Relative traffic share per slot (finite, 0 to 10^6); slots not named get 0, at least one
    must be > 0."""
    salt: str = "exp-1"
    """Salt of the sticky assignment hash; a new salt re-randomises users."""
    deadline_s: float = Field(default=0.5, gt=0.0, le=30.0)
    """Per-call deadline for a variant; past it the fallback answers."""

    @field_validator("weights")
    @classmethod
    def _known_slots(cls, weights: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        slots = (info.context or {}).get("slots")
        return weights if slots is None else validate_weights(weights, list(slots))


@serve.deployment(**INTERNAL_DEPLOYMENT)
class ABRouter:
    """Routes to one :class:`ModelServer` per variant; fallback model; MMR re-ranking.

    The constructor fixes the graph (slot handles, fallback, re-ranker); weights, salt and
    deadline are a :class:`RouterConfig` in ``user_config``, applied by :meth:`reconfigure`
    without restarting the replica. Admin calls (:meth:`set_weights`, :meth:`switch`,
    :meth:`reload`) change the same state at run time; a later ``serve deploy`` with a new
    ``user_config`` overrides them (config is the truth).
    """

    def __init__(
        self,
        variants: dict[str, DeploymentHandle],
        fallback: DeploymentHandle,
        reranker: DeploymentHandle,
    ) -> None:
        self.variants = variants
        self.fallback = fallback
        self.reranker = reranker
        self.order = list(variants)
        # One breaker per slot: calls a dead variant replica would fail or wait out the deadline
        # until Serve replaces it; after a few failures the slot's users go straight to the
        # fallback, and one probe a second finds out when the slot is back.
        self.breakers = {name: Breaker() for name in variants}
        self._settings: RouterConfig | None = None
        # Plain per-replica tallies for /admin/variants (the retraining canary reads them);
        # the Prometheus counters below are the cluster-wide view.
        self.served: collections.Counter[str] = collections.Counter()
        self.fell_back: collections.Counter[str] = collections.Counter()
        self.fallbacks = Counter(
            "app_router_fallbacks",
            description="Answers served by the fallback model, by variant and reason.",
            tag_keys=("variant", "reason"),  # type: ignore[arg-type]
        )

    @property
    def settings(self) -> RouterConfig:
        """The current weights, salt and deadline."""
        if self._settings is None:
            raise RuntimeError("ABRouter has no user_config: build the app with build_app()")
        return self._settings

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a :class:`RouterConfig`; on a live update an invalid one keeps the old."""
        self._settings = updated_config(
            self._settings, RouterConfig, user_config, "ABRouter", {"slots": self.order}
        )
        s = self._settings
        log.info("router: weights=%s salt=%s deadline=%.3fs", s.weights, s.salt, s.deadline_s)

    # ---- serving ------------------------------------------------------------------------
    async def _call(self, handle: DeploymentHandle, deadline_s: float, *args: Any) -> Any:
        resp = handle.recommend_batch.remote(*args)
        try:
            return await asyncio.wait_for(resp, timeout=deadline_s)  # type: ignore[arg-type]
        except TimeoutError:
            resp.cancel()  # free the replica's slot; the answer comes from the fallback
            raise

    async def _rerank(self, items: list[list[str]], ks: list[int], deadline_s: float) -> Any:
        resp = self.reranker.rerank_batch.remote(items, ks)
        try:
            return await asyncio.wait_for(resp, timeout=deadline_s)  # type: ignore[arg-type]
        except TimeoutError:
            resp.cancel()
            raise

    async def route_batch(self, user_ids: list[str], ks: list[int]) -> list[Answer]:
        """One :class:`Answer` per request, in order, with ``variant`` and the fallback fields
        set (the ingress's ``AdaptiveBatcher`` forms batches).

        Each variant gets one call for all of its users in the batch, under one deadline; the
        fallback one call for every list that came back short; the re-ranker one call. So a
        batch costs at most ``variants + 2`` actor calls however many requests it holds, which
        is what lets the composed graph keep up on few cores.
        """
        settings = self.settings  # one snapshot for the whole batch
        n = len(user_ids)
        slots = [assign(u, settings.salt, settings.weights) for u in user_ids]
        # extra candidates give the re-ranker room to diversify
        pools = [min(2 * k, 200) for k in ks]
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for i, slot in enumerate(slots):
            groups[slot].append(i)
        answers: list[Answer | None] = [None] * n
        reasons: list[str | None] = [None] * n

        async def ask(slot: str, idx: list[int]) -> None:
            breaker = self.breakers[slot]
            if not breaker.allow():
                for i in idx:
                    reasons[i] = "circuit_open"
                return
            try:
                got = await self._call(
                    self.variants[slot],
                    settings.deadline_s,
                    [user_ids[i] for i in idx],
                    [pools[i] for i in idx],
                )
                for i, ans in zip(idx, got, strict=True):
                    answers[i] = ans
                breaker.record(ok=True)
            except TimeoutError:
                breaker.record(ok=False)
                for i in idx:
                    reasons[i] = "timeout"
            except Exception as exc:  # a variant's failure is the fallback's cue, never the user's
                breaker.record(ok=False)
                log.warning("variant %s failed for %d users: %r", slot, len(idx), exc)
                for i in idx:
                    reasons[i] = "error"

        await asyncio.gather(*(ask(slot, idx) for slot, idx in groups.items()))

        items: list[list[str]] = []
        sources: list[Answer | None] = []
        for i in range(n):
            ans = answers[i]
            if ans is not None and reasons[i] is None and not ans.items:
                reasons[i] = "cannot_score"
            ok = ans is not None and reasons[i] is None
            items.append(list(ans.items) if ok and ans else [])
            sources.append(ans if ok else None)
        short = [i for i in range(n) if len(items[i]) < pools[i]]
        if short:
            # Unknown user, failed variant, or too few neighbours: fill with the fallback's
            # ranking, minus what the list already holds.
            try:
                fills: list[Answer] = await asyncio.wait_for(
                    self.fallback.recommend_batch.remote(  # type: ignore[arg-type]
                        [user_ids[i] for i in short],
                        [pools[i] - len(items[i]) for i in short],
                        [items[i] for i in short],
                    ),
                    timeout=max(settings.deadline_s, 1.0),
                )
                for i, fb in zip(short, fills, strict=True):
                    items[i] += fb.items
                    if sources[i] is None:
                        sources[i] = fb
            except Exception:
                log.exception("fallback failed too for %d users", len(short))
        for slot, reason in zip(slots, reasons, strict=True):
            self.served[slot] += 1
            if reason is not None:
                self.fell_back[slot] += 1
                self.fallbacks.inc(tags={"variant": slot, "reason": reason})
        try:
            # under the variants' deadline: a dead re-ranker replica must not hold the batch
            finals: list[list[str]] = await self._rerank(items, ks, settings.deadline_s)
        except Exception:
            log.exception("re-ranker failed; serving relevance order")
            finals = [it[:k] for it, k in zip(items, ks, strict=True)]
        out = []
        for i in range(n):
            variant_answer = answers[i]
            update = {
                "items": finals[i],
                "variant": slots[i],
                "known_user": variant_answer is not None and variant_answer.known_user,
                "fallback": reasons[i] is not None,
                "fallback_reason": reasons[i],
            }
            src = sources[i]
            out.append(src.model_copy(update=update) if src else Answer.model_validate(update))
        return out

    # ---- admin --------------------------------------------------------------------------
    async def describe(self) -> list[dict[str, Any]]:
        """Every slot with its weight, share of traffic and what it serves."""
        weights = self.settings.weights
        total = sum(weights.values())
        out = []
        for name in self.order:
            try:
                info = await self.variants[name].info.remote()
            except Exception as exc:
                info = {"model": None, "version": None, "error": public_reason(exc)}
            out.append(
                {
                    "name": name,
                    "weight": weights[name],
                    "share": weights[name] / total if total else 0.0,
                    "model": info.get("model"),
                    "version": info.get("version"),
                    "follow": info.get("follow"),
                    "watch": info.get("watch"),
                    "requests": self.served[name],
                    "fallbacks": self.fell_back[name],
                }
            )
        return out

    def config(self) -> dict[str, Any]:
        """The current :class:`RouterConfig` (admin listing)."""
        return self.settings.model_dump()

    def set_weights(self, weights: dict[str, float]) -> dict[str, float]:
        """Replace the weights atomically (one assignment); ValueError if invalid."""
        valid = validate_weights(weights, self.order)
        self._settings = self.settings.model_copy(update={"weights": valid})
        return dict(valid)

    async def switch(self, name: str, model: str, version: str | None) -> dict[str, Any]:
        """Make slot ``name`` serve ``model``/``version``; raises (old one keeps serving)."""
        if name not in self.variants:
            raise KeyError(f"unknown variant {name!r}; known: {self.order}")
        result: dict[str, Any] = await self.variants[name].switch.remote(model, version)
        return result

    async def reload(self) -> list[dict[str, Any]]:
        """Switch every slot to its model's latest verified version; failures keep the old one."""
        out = []
        for name in self.order:
            h = self.variants[name]
            info = await h.info.remote()
            latest = await h.latest.remote()
            row: dict[str, Any] = {"name": name, "model": info["model"], "from": info["version"]}
            if latest is None or latest == info["version"]:
                row.update(to=info["version"], changed=False)
            else:
                try:
                    new = await h.switch.remote(info["model"], latest)
                    row.update(to=new["version"], changed=True)
                except Exception as exc:
                    row.update(to=info["version"], changed=False, error=public_reason(exc))
            out.append(row)
        return out
