"""Client authentication of ``/recommend``: API keys and OAuth 2.0 bearer JWTs.

Off by default (the course platforms call ``/recommend`` without credentials). With client
credentials configured, a request that sends ``Authorization: Bearer …`` must carry a known
API key or a JWT that the configured issuer signed; ``required`` also refuses requests without
one. The identity found keys the request's quotas (:mod:`ray_app.serving.quotas`).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from ray_app.config import ConfigError
from ray_app.paths import resolve_location
from ray_app.serving.config import ClientAuth, JwtAuth


class AuthError(Exception):
    """A request's credentials were missing or refused (401); the message is one line."""


@dataclass(frozen=True)
class Identity:
    """Who is calling ``/recommend``."""

    client: str
    """Quota key of the client: ``key:<name>`` (API key) or ``jwt:<client id or subject>``."""
    subject: str | None
    """The authenticated end user (a JWT's ``sub``); None for an API key (a gateway)."""
    quota_per_min: int | None = None
    """The client's own quota (an API key's); None = the app's ``client_quota_per_min``."""


class JwtVerifier:
    """Checks a JWT's signature against the issuer's key set, and its ``iss``, ``exp``,
    ``nbf``, ``sub`` (required) and ``aud`` (when configured)."""

    def __init__(self, cfg: JwtAuth) -> None:
        self.cfg = cfg
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if cfg.jwks.startswith(("https://", "http://")):
            # Cached for 5 minutes; an unknown key id refetches (the issuer rotated keys).
            self._client = jwt.PyJWKClient(cfg.jwks, cache_keys=True, lifespan=300, timeout=5)
        else:
            path = Path(resolve_location(cfg.jwks))
            try:
                self._keys = jwt.PyJWKSet.from_json(path.read_text())
            except (OSError, ValueError, jwt.PyJWKSetError) as exc:
                raise ConfigError(
                    f"client_auth.jwt.jwks {path}: not a readable JSON Web Key Set "
                    f"({type(exc).__name__}); point it at the issuer's jwks file or https:// URL"
                ) from None

    async def _key(self, token: str) -> Any:
        if self._client is not None:
            # The fetch blocks (urllib); a cache hit costs only the thread hop.
            found = await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)
            return found.key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for k in self._keys.keys:
            if kid is None or k.key_id == kid:
                return k.key
        raise AuthError("bearer token signed with an unknown key")

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; :class:`AuthError` saying why not."""
        try:
            key = await self._key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(self.cfg.algorithms),
                issuer=self.cfg.issuer,
                audience=self.cfg.audience,
                leeway=self.cfg.leeway_s,
                options={
                    "require": ["exp", "iss", "sub"],
                    "verify_aud": self.cfg.audience is not None,
                },
            )
        except jwt.PyJWKClientConnectionError:
            raise AuthError(
                "bearer token could not be checked: the issuer's keys are unreachable"
            ) from None
        except (jwt.PyJWTError, ValueError) as exc:
            raise AuthError(f"invalid bearer token: {str(exc).splitlines()[0][:120]}") from None
        return claims


class ClientAuthenticator:
    """Turns a request's ``Authorization`` header into an :class:`Identity` (or None)."""

    def __init__(self, cfg: ClientAuth) -> None:
        self.required = cfg.required
        self._keys = {k.sha256: k for k in cfg.api_keys}
        self._jwt = JwtVerifier(cfg.jwt) if cfg.jwt is not None else None

    @property
    def enabled(self) -> bool:
        """Whether any client credential is configured (else ``Authorization`` is ignored)."""
        return bool(self._keys) or self._jwt is not None

    async def identify(self, authorization: str | None) -> Identity | None:
        """The caller, None for an anonymous request; :class:`AuthError` if refused."""
        if not self.enabled:
            return None
        if not authorization:
            if self.required:
                raise AuthError("credentials required: send Authorization: Bearer <key or token>")
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("Authorization must be 'Bearer <API key or token>'")
        key = self._keys.get(hashlib.sha256(token.encode()).hexdigest())
        if key is not None:
            return Identity(client=f"key:{key.name}", subject=None, quota_per_min=key.quota_per_min)
        if self._jwt is not None and token.count(".") == 2:
            claims = await self._jwt.claims(token)
            client = claims.get("azp") or claims.get("client_id") or claims["sub"]
            return Identity(client=f"jwt:{client}", subject=str(claims["sub"]))
        raise AuthError("unknown API key or bearer token")
