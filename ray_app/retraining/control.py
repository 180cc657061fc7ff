"""Talking to the serving app's admin API (bearer token) for canaries, promotion, rollback."""

from __future__ import annotations

import os
from typing import Any, Protocol

import httpx


class ServiceControl(Protocol):
    """What the retraining loop needs from the serving app."""

    def variants(self) -> list[dict[str, Any]]:
        """Slots: name, model, version, weight, requests, fallbacks."""
        ...

    def switch(self, variant: str, model: str, version: str) -> dict[str, Any]:
        """Point a slot at a verified registry version; raises on refusal."""
        ...

    def set_weights(self, weights: dict[str, float]) -> dict[str, Any]:
        """Replace the A/B weights."""
        ...


class SwitchRefused(RuntimeError):
    """The service refused a version (signature, manifest or load failure); old one serves."""


class HttpServiceControl:
    """:class:`ServiceControl` over HTTP: ``/admin/variants``, ``/admin/weights``, ``…/model``."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 60.0) -> None:
        token = token or os.environ.get("RAY_APP_ADMIN_TOKEN")
        if not token:
            raise ValueError(
                "the admin API needs a bearer token: set RAY_APP_ADMIN_TOKEN (same value the "
                "service hashes at start) or pass --admin-token"
            )
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
        )

    def variants(self) -> list[dict[str, Any]]:
        r = self.client.get("/admin/variants")
        r.raise_for_status()
        return list(r.json()["variants"])

    def switch(self, variant: str, model: str, version: str) -> dict[str, Any]:
        r = self.client.post(
            f"/admin/variants/{variant}/model", json={"model": model, "version": version}
        )
        if r.status_code == 409:
            raise SwitchRefused(str(r.json().get("detail", r.text)))
        r.raise_for_status()
        return dict(r.json())

    def set_weights(self, weights: dict[str, float]) -> dict[str, Any]:
        r = self.client.put("/admin/weights", json={"weights": weights})
        r.raise_for_status()
        return dict(r.json())
