"""The list the ingress answers with when neither the router nor the fallback model can.

It is seeded at start from the fallback model's own ranking, read (signature-verified) from the
registry by the ingress itself, so a cold or dead fallback replica can never turn an answer into
an empty list; afterwards every full list the fallback model produces refreshes it.
"""

from __future__ import annotations

import logging

from ray_app.models.base import FallbackRanker
from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import Registry
from ray_app.serving.answer import Answer

log = logging.getLogger("ray.serve")

SEED_ITEMS = 100
"""Ids kept from the registry: the most any request may ask for (``k`` ≤ 100)."""


class LastResort:
    """The most recent full-length list of the fallback model, with the version it came from.

    The ingress offers it every answer; only one from the configured fallback model (whose
    ranking does not depend on the user) with at least ``min_items`` items replaces the list.
    A tuple swap is atomic, so concurrent requests on the replica's event loop need no lock.
    """

    def __init__(self, fallback_model: str, min_items: int) -> None:
        self.fallback_model = fallback_model
        self.min_items = min_items
        self._items: tuple[str, ...] = ()
        self.version: str | None = None

    def seed(self, registry: str, signing: SigningConfig) -> None:
        """Start from the fallback model's latest verified version in ``registry``; on any
        failure keep what there is (and say why in the log: answers then wait for the
        fallback replica's first full list, or are refused with 503)."""
        try:
            model, mv = Registry(registry, signing).load(self.fallback_model)
        except Exception as exc:
            log.warning("last-resort list not seeded from %s: %s", registry, exc)
            return
        if not isinstance(model, FallbackRanker):
            log.warning(
                "last-resort list not seeded: fallback model %r cannot rank for any user",
                self.fallback_model,
            )
            return
        self._items = tuple(model.top_items(SEED_ITEMS))
        self.version = mv.version

    def offer(self, answer: Answer) -> None:
        """Keep ``answer``'s items if the fallback model produced a full list."""
        if answer.model == self.fallback_model and len(answer.items) >= self.min_items:
            self._items = tuple(answer.items)
            self.version = answer.model_version

    def items(self, k: int) -> list[str]:
        """Up to ``k`` ids of the kept list (empty only if neither seeding nor the fallback
        has produced one yet)."""
        return list(self._items[:k])

    def answer(self, base: Answer, k: int) -> Answer:
        """``base`` answered from this list instead (marked as a fallback)."""
        return base.model_copy(
            update={
                "items": self.items(k),
                "model": self.fallback_model,
                "model_version": self.version,
                "known_user": False,
                "fallback": True,
                "fallback_reason": base.fallback_reason or "last_resort",
            }
        )
