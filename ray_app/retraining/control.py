"""Talking to the serving app's admin API (bearer token) for canaries, promotion, rollback.

What a person can fix (no or a wrong token, a wrong URL, a slot missing from the serve config)
is raised as a :class:`~ray_app.errors.UserError` subclass whose one-line message says how.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import httpx

from ray_app.errors import UserError


class ServiceControl(Protocol):
    """What the retraining loop needs from the serving app."""

    def variants(self) -> list[dict[str, Any]]:
        """Slots: name, model, version, weight, requests, fallbacks."""
        ...

    def switch(self, variant: str, model: str, version: str) -> dict[str, Any]:
        """Point a slot at a verified registry version; raises :class:`SwitchRefused`."""
        ...

    def set_weights(self, weights: dict[str, float]) -> dict[str, Any]:
        """Replace the A/B weights."""
        ...


class SwitchRefused(RuntimeError):
    """The service refused a version (signature, manifest or load failure); old one serves."""


class ServiceError(UserError):
    """The serving app cannot be used as configured; the message says what to change."""


class AdminAuthError(ServiceError):
    """No admin token, or the service does not accept it as an admin (401/403)."""


class ServiceUnreachable(ServiceError):
    """Nothing answers at the service URL."""


class MissingSlot(ServiceError):
    """The service has no variant slot of the name the retrain config uses."""


def find_variant(variants: list[dict[str, Any]], name: str, role: str) -> dict[str, Any]:
    """The slot called ``name`` (``role`` says what retraining uses it for, e.g. ``canary``);
    raises :class:`MissingSlot` naming the fix."""
    for v in variants:
        if v["name"] == name:
            return v
    have = ", ".join(sorted(str(v["name"]) for v in variants)) or "none"
    raise MissingSlot(
        f"the service has no {role} variant {name!r} (it has: {have}): add it to the variants "
        f"in serve_config.yaml, or set {role}_variant in the retrain config to one of them"
    )


class HttpServiceControl:
    """:class:`ServiceControl` over HTTP: ``/admin/variants``, ``/admin/weights``, ``…/model``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        token = token or os.environ.get("RAY_APP_ADMIN_TOKEN")
        if not token:
            raise AdminAuthError(
                "the admin API needs a bearer token: set RAY_APP_ADMIN_TOKEN (the value the "
                "service hashes at start) or pass --admin-token"
            )
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
        )

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = self.client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnreachable(
                f"cannot reach the serving app at {self.base_url} ({type(exc).__name__}): "
                "start it (`ray-app serve`) or pass its address with --serve-url"
            ) from exc
        if r.status_code == 401:
            raise AdminAuthError(
                f"the serving app at {self.base_url} rejected the admin token (401): set "
                "RAY_APP_ADMIN_TOKEN or --admin-token to the token the service was started with "
                "(after `serve deploy` the replicas know only the RAY_APP_ADMIN_TOKEN or "
                "RAY_APP_API_KEYS of the nodes' `ray start` environment, or args.api_keys in "
                "serve_config.yaml)"
            )
        if r.status_code == 403:
            raise AdminAuthError(
                f"the serving app at {self.base_url} refused the token (403: not an admin "
                "key): use a token whose key has role admin in RAY_APP_API_KEYS"
            )
        return r

    def variants(self) -> list[dict[str, Any]]:
        """Slots as the service reports them."""
        r = self._send("GET", "/admin/variants")
        if r.status_code == 404:
            raise ServiceError(
                f"{self.base_url} has no /admin/variants: is --serve-url the ray-app service?"
            )
        r.raise_for_status()
        try:
            return list(r.json()["variants"])
        except (ValueError, KeyError, TypeError):  # not JSON, or not the admin API's answer
            raise ServiceError(
                f"{self.base_url}/admin/variants answered {r.status_code} without a variant "
                f"list ({len(r.content)} bytes): is --serve-url the ray-app service?"
            ) from None

    def switch(self, variant: str, model: str, version: str) -> dict[str, Any]:
        """Point ``variant`` at ``model``/``version``; raises :class:`SwitchRefused` when the
        service refuses the version (it keeps serving the old one)."""
        r = self._send(
            "POST", f"/admin/variants/{variant}/model", json={"model": model, "version": version}
        )
        if r.status_code == 409:
            detail = r.json().get("detail", r.text)
            raise SwitchRefused(
                str(detail.get("reason", detail) if isinstance(detail, dict) else detail)
            )
        if r.status_code == 404:
            raise MissingSlot(
                f"the service has no variant {variant!r}: add it to the variants in "
                "serve_config.yaml"
            )
        r.raise_for_status()
        return dict(r.json())

    def set_weights(self, weights: dict[str, float]) -> dict[str, Any]:
        """Replace the A/B weights."""
        r = self._send("PUT", "/admin/weights", json={"weights": weights})
        r.raise_for_status()
        return dict(r.json())
