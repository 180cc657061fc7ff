"""Admin credentials (hashed bearer tokens with roles), the header-size cap, and error messages
safe to show a client."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from ray_app.config import ConfigError
from ray_app.serving.config import ApiKey

ROLES = {"reader": 0, "admin": 1}
"""Role rank: a role may do everything the roles below it may."""


def token_hash(token: str) -> str:
    """SHA-256 hex of a bearer token: the only form in which keys are stored or compared."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who made an admin call (logged with every change)."""

    name: str
    role: str


class KeyStore:
    """Bearer-token → principal, holding only SHA-256 hashes of the tokens.

    Sources, all merged: ``ServeArgs.api_keys``; env ``RAY_APP_API_KEYS`` as
    ``name:role:sha256hex`` comma-separated; env ``RAY_APP_ADMIN_TOKEN`` (plaintext, hashed at
    start and then forgotten) as principal ``admin`` with role ``admin``. The environment is
    the replica's: on a ``ray start`` cluster, the nodes' environment at ``ray start``, not the
    ``serve deploy`` client's. A malformed ``RAY_APP_API_KEYS`` entry is a
    :class:`~ray_app.config.ConfigError`.
    """

    def __init__(self, keys: Iterable[ApiKey] = (), environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self._by_hash: dict[str, Principal] = {k.sha256: Principal(k.name, k.role) for k in keys}
        for entry in filter(None, (e.strip() for e in env.get("RAY_APP_API_KEYS", "").split(","))):
            parts = entry.split(":")
            if len(parts) != 3 or parts[1] not in ROLES or len(parts[2]) != 64:
                raise ConfigError(
                    f"RAY_APP_API_KEYS entry {parts[0]!r}: expected name:role:sha256hex "
                    f"with role in {sorted(ROLES)}"
                )
            self._by_hash[parts[2].lower()] = Principal(parts[0], parts[1])
        if env.get("RAY_APP_ADMIN_TOKEN"):
            self._by_hash[token_hash(env["RAY_APP_ADMIN_TOKEN"])] = Principal("admin", "admin")

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``; constant-time comparison against every stored hash."""
        h = token_hash(token)
        found = None
        for stored, p in self._by_hash.items():
            if hmac.compare_digest(stored, h):
                found = p
        return found


def allows(principal: Principal, role: str) -> bool:
    """Whether ``principal``'s role ranks at or above ``role``."""
    return ROLES.get(principal.role, -1) >= ROLES[role]


def public_reason(exc: BaseException, limit: int = 200) -> str:
    """What went wrong, for a client: the innermost error's type and first message line,
    without Ray's remote traceback, node addresses or server paths (each absolute path or
    URI is cut to its last component)."""
    while getattr(exc, "cause", None) is not None:  # Ray's RayTaskError wraps the original
        exc = exc.cause  # type: ignore[attr-defined]
    msg = str(exc.args[0]) if exc.args else str(exc)
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    first = lines[0].strip() if lines else ""
    first = _PATHS.sub(lambda m: m.group(1) + m.group(2), first)
    return f"{type(exc).__name__}: {first}"[:limit]


_PATHS = re.compile(r"((?:^|[\s'\"(=]))(?:[a-z][a-z0-9+.-]*://|/)(?:[^\s'\"()]*/)?([^\s'\"()/]*)")


class HeaderLimit:
    """ASGI middleware: requests whose headers total more than ``max_bytes`` get 431.

    The proxy in front has already read them; this keeps them from reaching the handlers (and
    the request log) and tells the client what to fix.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = 16 * 1024) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 431 for oversized headers; pass everything else on."""
        if scope["type"] == "http":
            size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
            if size > self.max_bytes:
                body = json.dumps(
                    {"detail": f"request headers exceed {self.max_bytes} bytes"}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class ReplicaState:
    """The key store shared by the ingress class and its module-level FastAPI dependencies.

    Serve pickles the ingress class by value, so a ``global`` assigned in its ``__init__`` lands
    in a copy of the module's globals that the route dependencies never see; this object is
    reached through the (by-reference) module instead, so both sides share it.
    """

    def __init__(self) -> None:
        self.keys = KeyStore(environ={})


STATE = ReplicaState()
