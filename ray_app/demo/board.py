"""The demo's live console: one row per stage with its status, figures and time, plus rows for
what keeps running in the background (ingest, simulated users).

On a terminal the table redraws in place (rich ``Live``) and lines printed meanwhile scroll
above it. Elsewhere (a pipe, a CI log) each stage prints one line when it ends, followed by the
background rows' figures, so a log still shows every stage's figures in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

log = logging.getLogger(__name__)

Status = Literal["waiting", "running", "done", "failed"]

_MARK: dict[Status, tuple[str, str]] = {
    "waiting": ("·", "dim"),
    "running": ("…", "yellow"),
    "done": ("✓", "green"),
    "failed": ("✗", "red"),
}
POLL_S = 1.0
"""How often the background rows' figures are refreshed."""


@dataclass
class _Row:
    status: Status = "waiting"
    figures: str = ""
    started: float | None = None
    seconds: float | None = None


class Board:
    """Stage rows (``stage``) and background rows (``watch``); use as a context manager."""

    def __init__(self, console: Console, stages: Sequence[str]) -> None:
        self.console = console
        self.rows = {name: _Row() for name in stages}
        self._watched: dict[str, Callable[[], str]] = {}
        self._watch_text: dict[str, str] = {}
        self._printed: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="demo-board", daemon=True)
        self._live: Live | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Self:
        if self.console.is_terminal:
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=4,
                transient=False,
            )
            self._live.start()
        self._poller.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._poller.join(timeout=5)
        if self._live is not None:
            self._live.stop()

    # ---- stages ---------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str) -> Iterator[Callable[[str], None]]:
        """Mark ``name`` running for the block, which gets a ``note(figures)`` callback; the
        stage ends done (or failed, if the block raises) with its last figures and time."""
        row = self.rows.setdefault(name, _Row())
        with self._lock:
            row.status, row.started, row.figures = "running", time.monotonic(), ""

        def note(figures: str) -> None:
            with self._lock:
                row.figures = figures

        try:
            yield note
        except BaseException as exc:
            self._end(name, row, "failed", f"{row.figures} {type(exc).__name__}: {exc}".strip())
            raise
        self._end(name, row, "done", row.figures)

    def _end(self, name: str, row: _Row, status: Status, figures: str) -> None:
        with self._lock:
            row.status, row.figures = status, " ".join(figures.split())
            row.seconds = time.monotonic() - (row.started or time.monotonic())
        mark, style = _MARK[status]
        line = Text.assemble((f"{mark} {name}", f"bold {style}"), f"  {row.figures}")
        line.append(f"  ({row.seconds:.1f}s)", style="dim")
        self.console.print(line)
        if self._live is None:
            # Off a terminal the background rows are printed under each finished stage, when
            # they changed since they were last printed.
            for watched, text in self.watched_figures().items():
                if self._printed.get(watched) != text:
                    self._printed[watched] = text
                    self.console.print(Text.assemble(("  ↻ ", "cyan"), f"{watched}: {text}"))

    # ---- background rows ------------------------------------------------------------------
    def watch(self, name: str, figures: Callable[[], str]) -> None:
        """Show ``figures()`` (polled every second) in a row of its own until :meth:`unwatch`."""
        with self._lock:
            self._watched[name] = figures
            self._watch_text[name] = "starting"

    def unwatch(self, name: str) -> None:
        """Stop polling ``name``; its last figures stay in :meth:`watched_figures`."""
        with self._lock:
            self._watched.pop(name, None)

    def watched_figures(self) -> dict[str, str]:
        """The latest figures of every background row."""
        with self._lock:
            return dict(self._watch_text)

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            with self._lock:
                watched = list(self._watched.items())
            for name, fn in watched:
                try:
                    text = fn()
                except Exception as exc:  # a row that cannot be read says so; the demo goes on
                    text = f"(unavailable: {type(exc).__name__})"
                    log.debug("board row %s failed", name, exc_info=True)
                with self._lock:
                    if name in self._watched:
                        self._watch_text[name] = text

    def print(self, *objects: Any) -> None:
        """Print above the live table (or plainly, off a terminal)."""
        self.console.print(*objects)

    # ---- rendering ------------------------------------------------------------------------
    def _render(self) -> RenderableType:
        table = Table(box=None, show_header=False, pad_edge=False, expand=False)
        table.add_column(width=1)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_column(justify="right", style="dim", no_wrap=True)
        now = time.monotonic()
        with self._lock:
            for name, row in self.rows.items():
                mark, style = _MARK[row.status]
                if row.status == "running" and row.started is not None:
                    took = f"{now - row.started:.0f}s"
                elif row.seconds is not None:
                    took = f"{row.seconds:.1f}s"
                else:
                    took = ""
                table.add_row(Text(mark, style=style), name, row.figures, took)
            for name, text in self._watch_text.items():
                live = name in self._watched
                table.add_row(Text("↻" if live else "■", style="cyan"), name, text, "")
        return table
