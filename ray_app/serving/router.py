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


@serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
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
        resp = handle.recommend.remote(*args)
        try:
            return await asyncio.wait_for(resp, timeout=self.deadline_s)  # type: ignore[arg-type]
        except TimeoutError:
            resp.cancel()  # free the replica's slot; the answer comes from the fallback
            raise

    async def route(self, user_id: str, k: int) -> dict[str, Any]:
        """Answer ``{"items", "variant", "model", "version", "fallback", "reason", ...}``."""
        variant = assign(user_id, self.salt, self.weights)
        pool = min(max(2 * k, k), 200)  # extra candidates give the re-ranker room to diversify
        reason: str | None = None
        ans: dict[str, Any] | None = None
        try:
            ans = await self._call(self.variants[variant], user_id, pool)
        except TimeoutError:
            reason = "timeout"
        except Exception as exc:  # a variant's failure is the fallback's cue, never the user's
            log.warning("variant %s failed for %s: %r", variant, user_id, exc)
            reason = "error"
        if ans is not None and not ans.get("items"):
            reason = "cannot_score"
        items: list[str] = list(ans["items"]) if ans and reason is None else []
        source = ans if reason is None else None
        if len(items) < pool:
            # Unknown user, failed variant, or too few neighbours: fill with popular unseen items.
            try:
                fb = await asyncio.wait_for(
                    self.fallback.recommend.remote(user_id, pool - len(items), items),  # type: ignore[arg-type]
                    timeout=max(self.deadline_s, 1.0),
                )
                items += fb["items"]
                if source is None:
                    source = fb
            except Exception:
                log.exception("fallback failed too for %s", user_id)
        self.served[variant] += 1
        if reason is not None:
            self.fell_back[variant] += 1
            self.fallbacks.inc(tags={"variant": variant, "reason": reason})
        try:
            rr = await self.reranker.rerank.remote(items, k)
            final = list(rr["items"])
        except Exception:
            log.exception("re-ranker failed; serving relevance order")
            final = items[:k]
        return {
            "items": final,
            "variant": variant,
            "model": (source or {}).get("model"),
            "version": (source or {}).get("version"),
            "known_user": bool(ans and ans.get("known")),
            "fallback": reason is not None,
            "reason": reason,
        }

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
