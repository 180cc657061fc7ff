"""What runs for the whole demo, beside the stages: the two ingest consumer groups on Ray and
the simulated users; and the waits that make what was produced durable before it is read."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from ray_app.broker.settings import KafkaSettings
from ray_app.errors import UserError
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.consumer import IngestStats
from ray_app.ingest.scale import ConsumerGroup
from ray_app.simulation.run import BackgroundSimulation, SimulationStats
from ray_app.state.config import StateConfig, StateConsumerConfig
from ray_app.state.group import StateConsumerGroup

INGEST_CPUS = 0.25
"""Ray CPUs each consumer actor reserves: ingest mostly waits on Kafka and disk."""
QUIET_S = 5.0
"""Ingest is caught up with a topic that already held events once this long passes without a
new durable record."""


class Background:
    """The ingest groups (``line``: the line-dialect topic, ``json``: the JSON-dialect topics)
    and the simulated users, with what each must have made durable so far."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.groups: dict[str, ConsumerGroup] = {}
        self.users: BackgroundSimulation | None = None
        self.replayed = 0
        """Line records the replay produced."""
        self.health_url: str | None = None
        """The service's ``/admin/status`` (its count of reco events sent), once it serves."""
        self.admin_headers: dict[str, str] = {}
        """The credential ``health_url`` needs."""
        self.state: StateConsumerGroup | None = None
        """The state consumer keeping users' fresh history for serving."""

    # ---- ingest ---------------------------------------------------------------------------
    def start_ingest(self, settings: KafkaSettings, line: IngestConfig, json: IngestConfig) -> None:
        """One consumer actor per dialect, consuming until :meth:`stop_ingest`."""
        for name, cfg in (("line", line), ("json", json)):
            self.groups[name] = ConsumerGroup(settings, cfg, n=1, num_cpus=INGEST_CPUS).start()

    def start_state(self, settings: KafkaSettings, topic: str, state: StateConfig) -> None:
        """One state consumer actor on the line-dialect topic, until :meth:`stop`."""
        cfg = StateConsumerConfig(topics=[topic], state=state)
        self.state = StateConsumerGroup(settings, cfg, n=1, num_cpus=INGEST_CPUS).start()

    def ingest_stats(self) -> dict[str, IngestStats]:
        """Each running group's figures so far."""
        return {name: g.stats() for name, g in list(self.groups.items())}

    def ingest_figures(self) -> str:
        """One line of ingest figures for the console."""
        return " | ".join(
            f"{name}: {st.records:,} records → {st.snapshot_rows:,} rows, "
            f"{st.dead_letters:,} dead letters, {st.batches:,} batches"
            for name, st in self.ingest_stats().items()
        )

    def stop_ingest(self) -> dict[str, IngestStats]:
        """Flush, commit and stop every group; their final figures."""
        groups, self.groups = self.groups, {}
        return {name: g.stop() for name, g in groups.items()}

    # ---- simulated users ------------------------------------------------------------------
    def user_figures(self) -> str:
        """One line of the simulated users' figures for the console."""
        return self.users.stats.summary() if self.users is not None else "stopped"

    def stop_users(self) -> SimulationStats | None:
        """Stop the simulated users (after the requests in flight); their final figures."""
        users, self.users = self.users, None
        return users.stop() if users is not None else None

    # ---- waits ----------------------------------------------------------------------------
    def expected(self) -> dict[str, int]:
        """Records each group must have made durable for everything produced so far."""
        line = self.replayed
        if self.users is not None:
            line += self.users.stats.watch_events + self.users.stats.rates
        json = 0
        if self.health_url is not None:
            health = httpx.get(self.health_url, timeout=10, headers=self.admin_headers).json()
            json = int(health.get("reco_log", {}).get("sent", 0))
        return {"line": line, "json": json}

    def drain(self, note: Callable[[str], None], doing: str) -> float:
        """Wait until ingest made everything produced so far durable; the seconds waited.
        UserError when a group falls ``timeout_s`` behind."""
        t0 = time.monotonic()
        for name, n in self.expected().items():
            group = self.groups.get(name)
            if group is None or n == 0:
                continue
            note(f"{doing}: ingest making {n:,} {name} records durable")
            if not group.wait_durable(n, self.timeout_s):
                raise UserError(
                    f"ingest ({name}) made {group.durable_records():,} of {n:,} records durable "
                    f"within {self.timeout_s:g}s: see the consumer actors on the Ray "
                    "dashboard's Actors page"
                )
        return time.monotonic() - t0

    def wait_quiet(self, name: str) -> float:
        """Wait until group ``name`` consumed what its topics already held (nothing new durable
        for ``QUIET_S``, nothing buffered); the seconds waited."""
        group = self.groups[name]
        t0 = time.monotonic()
        last, since = -1, time.monotonic()
        while time.monotonic() - t0 < self.timeout_s:
            st = group.stats()
            durable = st.snapshot_rows + st.dead_letters
            if durable != last or st.records != durable:
                last, since = durable, time.monotonic()
            elif time.monotonic() - since >= QUIET_S:
                break
            time.sleep(0.5)
        return time.monotonic() - t0

    def stop(self) -> None:
        """Stop whatever still runs (the exit path; the figures are not kept)."""
        self.stop_users()
        self.stop_ingest()
        state, self.state = self.state, None
        if state is not None:
            state.stop()
