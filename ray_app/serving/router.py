"""Sticky A/B router: assigns a user to a variant, calls it under a deadline, falls back, re-ranks."""

from __future__ import annotations

import asyncio
import bisect
import collections
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter

from ray_app.serving.config import INTERNAL_DEPLOYMENT

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
    """Weights for exactly the known slots, each ≥ 0, some > 0; ValueError saying what is wrong."""
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {known}")
    out = {n: float(weights.get(n, 0.0)) for n in known}
    if any(w < 0 for w in out.values()):
        raise ValueError("weights must be >= 0")
    if sum(out.values()) <= 0:
        raise ValueError("at least one weight must be > 0")
    return out


@serve.deployment(**INTERNAL_DEPLOYMENT)
class ABRouter:
    """Routes to one :class:`ModelServer` per variant; popularity fallback; MMR re-ranking.

    ``user_config``: ``{"weights": {"A": 0.5, "B": 0.5}, "salt": "exp-1", "deadline_s": 0.5}``
    applied by :meth:`reconfigure` without restarting the replica. Admin calls
    (:meth:`set_weights`, :meth:`switch`, :meth:`reload`) change the same state at run time;
    a later ``serve deploy`` with a new ``user_config`` overrides them (config is the truth).
    """

    def __init__(
        self,
        variants: dict[str, DeploymentHandle],
        fallback: DeploymentHandle,
        reranker: DeploymentHandle,
        weights: dict[str, float],
        salt: str = "exp-1",
        deadline_s: float = 0.5,
    ) -> None:
        self.variants = variants
        self.fallback = fallback
        self.reranker = reranker
        self.order = list(variants)
        self.weights = validate_weights(weights, self.order)
        self.salt = salt
        self.deadline_s = deadline_s
        # Plain per-replica tallies for /admin/variants (the retraining canary reads them);
        # the Prometheus counters below are the cluster-wide view.
        self.served: collections.Counter[str] = collections.Counter()
        self.fell_back: collections.Counter[str] = collections.Counter()
        self.fallbacks = Counter(
            "app_router_fallbacks",
            description="Answers served by the fallback model, by variant and reason.",
            tag_keys=("variant", "reason"),  # type: ignore[arg-type]
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``weights`` / ``salt`` / ``deadline_s``; an invalid value keeps the old one."""
        if "weights" in user_config:
            try:
                self.weights = validate_weights(user_config["weights"], self.order)
            except ValueError:
                log.exception("router user_config weights refused; keeping %s", self.weights)
        self.salt = str(user_config.get("salt", self.salt))
        self.deadline_s = float(user_config.get("deadline_s", self.deadline_s))
        log.info(
            "router: weights=%s salt=%s deadline=%.3fs", self.weights, self.salt, self.deadline_s
        )

    # ---- serving ------------------------------------------------------------------------
    async def _call(self, handle: DeploymentHandle, *args: Any) -> Any:
        resp = handle.recommend_batch.remote(*args)
        try:
            return await asyncio.wait_for(resp, timeout=self.deadline_s)  # type: ignore[arg-type]
        except TimeoutError:
            resp.cancel()  # free the replica's slot; the answer comes from the fallback
            raise

    async def route_batch(self, user_ids: list[str], ks: list[int]) -> list[dict[str, Any]]:
        """One answer per request, in order: ``{"items", "variant", "model", "version",
        "known_user", "fallback", "reason"}`` (the ingress's ``AdaptiveBatcher`` forms batches).

        Each variant gets one call for all of its users in the batch, under one deadline; the
        fallback one call for every list that came back short; the re-ranker one call. So a
        batch costs at most ``variants + 2`` actor calls however many requests it holds, which
        is what lets the composed graph keep up on few cores.
        """
        n = len(user_ids)
        slots = [assign(u, self.salt, self.weights) for u in user_ids]
        # extra candidates give the re-ranker room to diversify
        pools = [min(2 * k, 200) for k in ks]
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for i, slot in enumerate(slots):
            groups[slot].append(i)
        answers: list[dict[str, Any] | None] = [None] * n
        reasons: list[str | None] = [None] * n

        async def ask(slot: str, idx: list[int]) -> None:
            try:
                got = await self._call(
                    self.variants[slot], [user_ids[i] for i in idx], [pools[i] for i in idx]
                )
                for i, ans in zip(idx, got, strict=True):
                    answers[i] = ans
            except TimeoutError:
                for i in idx:
                    reasons[i] = "timeout"
            except Exception as exc:  # a variant's failure is the fallback's cue, never the user's
                log.warning("variant %s failed for %d users: %r", slot, len(idx), exc)
                for i in idx:
                    reasons[i] = "error"

        await asyncio.gather(*(ask(slot, idx) for slot, idx in groups.items()))

        items: list[list[str]] = []
        sources: list[dict[str, Any] | None] = []
        for i in range(n):
            ans = answers[i]
            if ans is not None and reasons[i] is None and not ans.get("items"):
                reasons[i] = "cannot_score"
            ok = ans is not None and reasons[i] is None
            items.append(list(ans["items"]) if ok and ans else [])
            sources.append(ans if ok else None)
        short = [i for i in range(n) if len(items[i]) < pools[i]]
        if short:
            # Unknown user, failed variant, or too few neighbours: fill with popular unseen items.
            try:
                fills = await asyncio.wait_for(
                    self.fallback.recommend_batch.remote(  # type: ignore[arg-type]
                        [user_ids[i] for i in short],
                        [pools[i] - len(items[i]) for i in short],
                        [items[i] for i in short],
                    ),
                    timeout=max(self.deadline_s, 1.0),
                )
                for i, fb in zip(short, fills, strict=True):
                    items[i] += fb["items"]
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
            reranked = await self.reranker.rerank_batch.remote(items, ks)
            finals = [list(r["items"]) for r in reranked]
        except Exception:
            log.exception("re-ranker failed; serving relevance order")
            finals = [it[:k] for it, k in zip(items, ks, strict=True)]
        return [
            {
                "items": finals[i],
                "variant": slots[i],
                "model": (sources[i] or {}).get("model"),
                "version": (sources[i] or {}).get("version"),
                "known_user": bool(answers[i] and answers[i].get("known")),  # type: ignore[union-attr]
                "fallback": reasons[i] is not None,
                "reason": reasons[i],
            }
            for i in range(n)
        ]

    # ---- admin --------------------------------------------------------------------------
    async def describe(self) -> list[dict[str, Any]]:
        """Every slot with its weight, share of traffic and what it serves."""
        total = sum(self.weights.values())
        out = []
        for name in self.order:
            try:
                info = await self.variants[name].info.remote()
            except Exception as exc:
                info = {"model": None, "version": None, "error": repr(exc)}
            out.append(
                {
                    "name": name,
                    "weight": self.weights[name],
                    "share": self.weights[name] / total if total else 0.0,
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
        return {"weights": dict(self.weights), "salt": self.salt, "deadline_s": self.deadline_s}

    def set_weights(self, weights: dict[str, float]) -> dict[str, float]:
        """Replace the weights atomically (one assignment); ValueError if invalid."""
        self.weights = validate_weights(weights, self.order)
        return dict(self.weights)

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
                    row.update(to=info["version"], changed=False, error=str(exc))
            out.append(row)
        return out
