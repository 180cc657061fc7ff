"""What the demo runs and where it writes."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ray_app.config import ConfigError
from ray_app.paths import is_uri, resolve_location


class DemoConfig(BaseModel):
    """The demo's knobs (``ray-app demo --help`` shows them as flags)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    once: bool = False
    """Run one full cycle, print the summary and exit 0 only if every stage did its job;
    otherwise keep simulating and retraining until Ctrl-C."""
    users: int | None = Field(default=None, ge=2)
    """MovieLens users in the history and among the simulated users (None: all 943)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """HTTP port of the Serve app."""
    workdir: str = "data/demo"
    """Local directory for snapshots, the registry, online evaluation and the report (relative:
    against ``RAY_APP_HOME``, else the current directory)."""
    bootstrap_servers: str = ""
    """Kafka to use; empty starts the embedded broker (and the demo starts from empty
    snapshots and an empty registry)."""
    ray_address: str | None = None
    """Ray cluster to join (``--ray-address`` / ``RAY_ADDRESS``); None starts a local Ray."""
    config_dir: Path = Path(".")
    """Where ``serve_config.yaml`` and ``configs/`` are (the repository root)."""
    sim_rate: float = Field(default=40.0, gt=0)
    """Requests per second the simulated users send to the live endpoint."""
    sim_concurrency: int = Field(default=8, ge=1)
    """Requests in flight at once."""
    sim_requests: int = Field(default=400, ge=1)
    """Requests the simulated users make before the first online evaluation. Few enough that
    the first retraining's candidate is still comparable with the serving version: its data
    is mostly the history, and the gate's parity check compares the two."""
    window_s: float = Field(default=120.0, ge=10)
    """Attribution window: a watch counts for a list shown at most this long before it. The
    simulated users watch within it, so a list matures (is counted) once an event this much
    newer exists, within the demo."""
    eval_every_s: float = Field(default=60.0, gt=0)
    """Without ``once``: seconds between online evaluations and reports."""
    retrain_every_s: float = Field(default=300.0, gt=0)
    """Without ``once``: seconds between retraining cycles."""
    timeout_s: float = Field(default=300.0, gt=0)
    """Longest wait for ingest to make produced events durable, or the service to come up."""

    def home(self) -> Path:
        """``workdir`` as an absolute local path."""
        where = resolve_location(self.workdir)
        if is_uri(where):
            raise ConfigError(
                f"the demo's workdir {where} is not a local directory: pass --workdir with a "
                "local path (the demo removes and rewrites what it holds)"
            )
        return Path(where)

    def location(self, name: str) -> Path:
        """``workdir/name`` as an absolute local path."""
        return self.home() / name
