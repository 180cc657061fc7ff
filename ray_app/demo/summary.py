"""The demo's closing summary: what each stage achieved, the checks ``--once`` exits by, and a
``summary.json`` beside the demo's data for scripts and tests."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ray_app.ingest.consumer import IngestStats
from ray_app.simulation.run import SimulationStats


@dataclass
class Checks:
    """What ``--once`` requires of a full cycle."""

    events_ingested: int = 0
    """Records made durable in the snapshots (both ingest groups)."""
    reco_events_joined: int = 0
    """Mature reco events joined to a later watch of one of their items."""
    promoted_version: str | None = None
    """The version a retraining cycle promoted."""
    report_html: str | None = None
    """The experiment report, if it was written."""

    def failures(self) -> list[str]:
        """One line per unmet check (empty: the cycle closed)."""
        out = []
        if self.events_ingested <= 0:
            out.append("no event was ingested into the snapshots")
        if self.reco_events_joined <= 0:
            out.append("no reco event was joined to a later watch")
        if not self.promoted_version:
            out.append("no model version was promoted")
        if not self.report_html or not Path(self.report_html).is_file():
            out.append("the experiment report was not written")
        return out


@dataclass
class DemoSummary:
    """Everything the closing summary shows."""

    checks: Checks = field(default_factory=Checks)
    conversion: list[dict[str, Any]] = field(default_factory=list)
    """Per variant, model and version: requests, users, conversions, conversion_rate."""
    variants: list[dict[str, Any]] = field(default_factory=list)
    """What each slot served at the end, with its traffic."""
    retrains: list[dict[str, Any]] = field(default_factory=list)
    """Each retraining cycle: outcome, version, reason."""
    ingest: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per ingest group: records, snapshot rows, dead letters, batches."""
    simulation: dict[str, Any] = field(default_factory=dict)
    report_decision: str = ""
    window_s: float = 0.0
    dashboard_url: str = ""
    metrics_url: str = ""
    online_metrics: str = ""
    """The online-evaluation gauges in Prometheus textfile format."""
    serve_url: str = ""
    freshness_s: float | None = None
    """Produce-to-answer seconds of the freshness probe (None: not measured or not reflected)."""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    """Stages that failed, with their error."""

    def failures(self) -> list[str]:
        """Unmet checks and failed stages."""
        return [*self.errors, *self.checks.failures()]

    def record_users(self, stats: SimulationStats) -> None:
        """The simulated users' figures."""
        self.simulation = {
            "requests": stats.requests,
            "failures": stats.failures,
            "watches": stats.watches,
            "rates": stats.rates,
            "per_variant": dict(stats.per_variant),
            "summary": stats.summary(),
        }

    def record_ingest(self, groups: dict[str, IngestStats]) -> None:
        """Each ingest group's figures, and the events ingested in all."""
        for name, st in groups.items():
            self.ingest[name] = {
                "records": st.records,
                "snapshot_rows": st.snapshot_rows,
                "dead_letters": st.dead_letters,
                "batches": st.batches,
            }
        self.checks.events_ingested = sum(
            g["snapshot_rows"] + g["dead_letters"] for g in self.ingest.values()
        )

    def write(self, path: Path) -> Path:
        """Write the summary as JSON (no secrets in it); returns ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data["ok"] = not self.failures()
        data["failures"] = self.failures()
        path.write_text(json.dumps(data, indent=2, default=str))
        return path


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def print_summary(s: DemoSummary, console: Console) -> None:
    """The closing summary on ``console``."""
    conv = Table(title="conversion per variant and model version (mature lists)")
    for col in ("variant", "model", "version", "requests", "users", "converted", "rate"):
        conv.add_column(
            col, justify="right" if col in ("requests", "users", "converted") else "left"
        )
    for r in s.conversion:
        conv.add_row(
            str(r["variant"]),
            str(r["model"]),
            str(r["version"]),
            f"{int(r['requests']):,}",
            f"{int(r['users']):,}",
            f"{int(r['conversions']):,}",
            _pct(float(r["conversion_rate"])),
        )
    console.print(conv)
    console.print(
        f"attribution window {s.window_s:g}s: a watch counts for the latest list that showed the "
        f"movie at most {s.window_s:g}s before it; simulated users watch within it, so lists "
        "mature during the demo"
    )
    served = Table(title="versions served at the end")
    for col in ("slot", "model", "version", "weight", "requests", "fallbacks"):
        served.add_column(col)
    for v in s.variants:
        served.add_row(
            str(v.get("name")),
            str(v.get("model")),
            str(v.get("version")),
            f"{float(v.get('weight', 0)):.3g}",
            str(v.get("requests", "")),
            str(v.get("fallbacks", "")),
        )
    console.print(served)
    for r in s.retrains:
        version = f" {r['version']}" if r.get("version") else ""
        console.print(f"retraining: [bold]{r['outcome']}[/bold]{version} — {r['reason']}")
    for name, g in s.ingest.items():
        console.print(
            f"ingest ({name}): {g['records']:,} records → {g['snapshot_rows']:,} snapshot rows, "
            f"{g['dead_letters']:,} dead letters, {g['batches']:,} batches"
        )
    if s.simulation:
        console.print(f"simulated users: {s.simulation.get('summary', '')}")
    if s.report_decision:
        console.print(f"experiment: {s.report_decision}")
    console.print(f"report:     {s.checks.report_html or '(not written)'}")
    console.print(f"service:    {s.serve_url or '(stopped)'}")
    fresh = f"{s.freshness_s:.2f}s" if s.freshness_s is not None else "(not measured)"
    console.print(f"freshness:  {fresh} from a watch event on Kafka to the user's next answer")
    console.print(f"dashboard:  {s.dashboard_url or '(not running)'}")
    console.print(f"metrics:    {s.metrics_url or '(not exported)'} (ray_app_* serving series)")
    if s.online_metrics:
        console.print(f"            {s.online_metrics} (online conversion gauges)")
    failures = s.failures()
    if failures:
        for f in failures:
            console.print(f"[red]✗ {f}[/red]")
    else:
        console.print(
            f"[green]✓ the loop closed in {s.seconds:.0f}s: {s.checks.events_ingested:,} events "
            f"ingested, {s.checks.reco_events_joined:,} reco events joined to later watches, "
            f"{s.checks.promoted_version} promoted[/green]"
        )
