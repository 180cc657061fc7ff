"""A circuit breaker for calls to a deployment that may have lost a replica: the ingress's
calls to the router, and the router's to each variant.

A dead replica holds each call until the caller's deadline (or fails it), and Serve takes
seconds to notice it is gone; without a breaker every request in that window waits out the
deadline. After ``failures`` consecutive failed calls the breaker opens: for ``open_s`` the
caller answers from the fallback model at once; then one call probes the deployment, and its
outcome closes the breaker or opens it again.
"""

from __future__ import annotations

import time


class Breaker:
    """Consecutive-failure circuit breaker (one per caller replica and callee, used on the
    caller's event loop)."""

    def __init__(self, failures: int = 3, open_s: float = 1.0) -> None:
        self.failures = failures
        self.open_s = open_s
        self._failed = 0
        self._open_until = 0.0
        self._probing = False

    def allow(self, now: float | None = None) -> bool:
        """Whether this call may go to the router (closed, or the one probe when half-open)."""
        t = time.monotonic() if now is None else now
        if self._failed < self.failures:
            return True
        if t < self._open_until or self._probing:
            return False
        self._probing = True
        return True

    def record(self, ok: bool, now: float | None = None) -> None:
        """The outcome of a call that :meth:`allow` let through."""
        t = time.monotonic() if now is None else now
        self._probing = False
        if ok:
            self._failed = 0
            return
        self._failed += 1
        if self._failed >= self.failures:
            self._open_until = t + self.open_s
