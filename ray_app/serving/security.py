"""Admin credentials (hashed bearer tokens with roles) and per-key token-bucket rate limits."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

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


class RateLimiter:
    """Token buckets per key: ``per_min`` tokens a minute, burst of ``per_min``.

    Buckets live in a bounded LRU so a flood of distinct keys cannot exhaust memory; an
    evicted key simply starts with a full bucket again.
    """

    def __init__(self, per_min: int, max_keys: int = 100_000) -> None:
        self.capacity = float(per_min)
        self.rate = per_min / 60.0
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, key: str, now: float | None = None) -> float:
        """0.0 if a token was taken; otherwise seconds until one is available (Retry-After)."""
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.capacity, t))
            tokens = min(self.capacity, tokens + (t - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens, t)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return wait


class ReplicaState:
    """The key store shared by the ingress class and its module-level FastAPI dependencies.

    Serve pickles the ingress class by value, so a ``global`` assigned in its ``__init__`` lands
    in a copy of the module's globals that the route dependencies never see; this object is
    reached through the (by-reference) module instead, so both sides share it.
    """

    def __init__(self) -> None:
        self.keys = KeyStore(environ={})


STATE = ReplicaState()
