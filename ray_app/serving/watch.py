"""Registry watching: a serving slot follows ``latest`` or an alias such as ``production``.

Edge-triggered: the watcher acts when the followed reference *moves* (a new version is
registered, or retraining re-points ``production``), not whenever the served version differs
from it. So an operator's explicit ``/admin`` switch is not undone on the next poll, and a
version that fails its signature check is tried once, recorded as refused, and left alone
until the reference moves again; the old version keeps serving throughout.

Given the registry, the watcher also refuses a *downgrade*: a reference that moves to a version
created (by its signed manifest) before the one serving, as a restored old aliases file or a
deleted newer version would make it, is refused unless ``allow_downgrade`` is configured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ray_app.registry.store import Registry

log = logging.getLogger("ray.serve")


class RegistryWatcher:
    """Polls ``resolve()`` every ``interval_s`` seconds on a daemon thread; 0 turns it off.

    ``resolve`` returns ``(model_name, version_or_None)`` for the followed reference,
    ``current`` the version being served, and ``switch(name, version)`` verifies, loads and
    swaps (raising and keeping the old one on failure). With ``registry``, a move to an older
    version is refused (:meth:`Registry.check_upgrade`) unless ``allow_downgrade``.
    """

    def __init__(
        self,
        resolve: Callable[[], tuple[str, str | None]],
        current: Callable[[], str],
        switch: Callable[[str, str], Any],
        *,
        registry: Registry | None = None,
    ) -> None:
        self._resolve = resolve
        self._current = current
        self._switch = switch
        self._registry = registry
        self.allow_downgrade = False
        self.interval_s = 0.0
        self.refused: dict[str, str] = {}
        self.switched: list[str] = []
        self.last_check: float | None = None
        self.last_error: str | None = None
        self._seen: tuple[str, str | None] | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Re-entrant: a switch to a renamed model calls rebase() from inside check_once().
        self._lock = threading.RLock()

    def configure(self, interval_s: float, *, allow_downgrade: bool = False) -> None:
        """Start, retime or (with 0) stop polling; ``allow_downgrade`` lets the followed
        reference move the slot to an older version."""
        self.allow_downgrade = allow_downgrade
        self.interval_s = max(0.0, float(interval_s))
        if self.interval_s > 0 and (self._thread is None or not self._thread.is_alive()):
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="registry-watch", daemon=True)
            self._thread.start()
        elif self.interval_s == 0 and self._thread is not None:
            self.stop()
        self._wake.set()  # a new interval applies now, not after the old one elapses

    @property
    def running(self) -> bool:
        """Whether the polling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop polling and wait for the thread to end."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    def rebase(self) -> None:
        """Forget the last seen reference: the next check only records what it sees."""
        with self._lock:
            self._seen = None

    def check_once(self) -> str | None:
        """One poll; returns the version switched to, or None."""
        with self._lock:
            self.last_check = time.time()
            try:
                ref = self._resolve()
            except Exception as exc:  # registry briefly unreachable: try again next tick
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("registry watch: cannot read the registry: %s", self.last_error)
                return None
            self.last_error = None
            seen, self._seen = self._seen, ref
            name, version = ref
            current = self._current()
            if seen is None or ref == seen or version is None or version == current:
                return None
            try:
                if self._registry is not None and current:
                    self._registry.check_upgrade(
                        name, version, current, allow_downgrade=self.allow_downgrade
                    )
                self._switch(name, version)
            except Exception as exc:
                self.refused[version] = f"{type(exc).__name__}: {exc}"
                log.error(
                    "registry watch: %s %s refused, still serving %s: %s",
                    name,
                    version,
                    self._current(),
                    self.refused[version],
                )
                return None
            self.switched.append(version)
            log.warning("registry watch: now serving %s %s", name, version)
            return version

    def state(self) -> dict[str, Any]:
        """What ``/admin/variants`` shows under ``watch``."""
        return {
            "interval_s": self.interval_s,
            "allow_downgrade": self.allow_downgrade,
            "last_check": self.last_check,
            "last_error": self.last_error,
            "refused": dict(self.refused),
            "switched": list(self.switched[-10:]),
        }

    def _loop(self) -> None:
        self.check_once()  # records the starting point
        while not self._stop.is_set():
            self._wake.wait(self.interval_s or None)
            self._wake.clear()
            if self._stop.is_set() or self.interval_s <= 0:
                return
            self.check_once()
