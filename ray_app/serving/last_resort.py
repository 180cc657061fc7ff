"""The list the ingress answers with when neither the router nor the fallback model can."""

from __future__ import annotations

from ray_app.serving.answer import Answer


class LastResort:
    """The most recent full-length list the fallback model produced.

    The ingress offers it every answer; only one from the configured fallback model (whose
    ranking does not depend on the user) with at least ``min_items`` items replaces the list.
    A tuple swap is atomic, so concurrent requests on the replica's event loop need no lock.
    """

    def __init__(self, fallback_model: str, min_items: int) -> None:
        self.fallback_model = fallback_model
        self.min_items = min_items
        self._items: tuple[str, ...] = ()

    def offer(self, answer: Answer) -> None:
        """Keep ``answer``'s items if the fallback model produced a full list."""
        if answer.model == self.fallback_model and len(answer.items) >= self.min_items:
            self._items = tuple(answer.items)

    def items(self, k: int) -> list[str]:
        """Up to ``k`` ids of the kept list (empty before the fallback has answered)."""
        return list(self._items[:k])
