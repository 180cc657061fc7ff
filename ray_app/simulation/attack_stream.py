"""Shilling attack cohorts sent through Kafka like real users.

:func:`~ray_app.shilling.attacks.generate_attack` builds the fake profiles (random, average,
bandwagon, average-over-popular) from the public aggregates of the genuine ratings; this module
turns each profile row into the events a real user leaves on the activity topic: a watch (the
movie's first minute) and then the rating, in the line dialect, keyed by user, through the same
:class:`~ray_app.simulation.run.EventSink` the simulator uses. Ingest therefore sees the attack
exactly as it sees genuine traffic, and the pre-training screen has to find it from the data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ray_app.events.line_dialect import format_line
from ray_app.events.model import Event, RateEvent, WatchEvent
from ray_app.shilling.attacks import AttackConfig, generate_attack
from ray_app.simulation.run import EventSink


class AttackStreamConfig(BaseModel):
    """How an attack cohort is paced onto the topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    attack: AttackConfig = AttackConfig()
    """The cohort: type, attack size (share of the genuine users) and filler size."""
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    """Time of the cohort's first event."""
    spacing_s: float = Field(default=60.0, gt=0)
    """Seconds between one fake user's consecutive ratings (each watch comes a second
    before its rating)."""
    watch: bool = True
    """Also send a watch event before each rating, as a genuine viewer would."""
    seed: int = 0
    """Seeds the profiles."""


@dataclass(frozen=True)
class InjectedAttack:
    """What :func:`inject_attack` sent."""

    profiles: pd.DataFrame
    """The fake ``user_id, item_id, rating, timestamp`` rows."""
    targets: list[str]
    events: int
    """Events sent (watches plus ratings)."""

    @property
    def fake_users(self) -> list[str]:
        """The fake user ids, sorted."""
        return sorted(self.profiles["user_id"].astype(str).unique(), key=int)

    def summary(self) -> str:
        """One line for the CLI."""
        return (
            f"{len(self.fake_users)} fake users, {len(self.profiles)} ratings, "
            f"{self.events} events pushing {', '.join(self.targets)}"
        )


def attack_events(
    profiles: pd.DataFrame, start: datetime, spacing_s: float, watch: bool = True
) -> Iterator[tuple[str, Event]]:
    """``(user_id, event)`` for every profile row: each fake user's rows ``spacing_s`` apart
    from ``start``, a watch one second before each rating when ``watch``; users interleaved
    row by row so the cohort arrives together, as a coordinated attack does."""
    frame = profiles.assign(
        user_id=profiles["user_id"].astype(str), item_id=profiles["item_id"].astype(str)
    )
    slot = frame.groupby("user_id", sort=False).cumcount().to_numpy()
    order = np.lexsort((frame["user_id"].to_numpy(), slot))
    users = frame["user_id"].to_numpy()[order]
    items = frame["item_id"].to_numpy()[order]
    ratings = frame["rating"].to_numpy(dtype=np.float64)[order]
    for u, m, r, s in zip(users, items, ratings, slot[order], strict=True):
        at = start + timedelta(seconds=float(s) * spacing_s + 1.0)
        if watch:
            yield u, WatchEvent(at - timedelta(seconds=1), u, m, 0)
        yield u, RateEvent(at, u, m, float(r))


def inject_attack(
    ratings: pd.DataFrame,
    targets: Sequence[str],
    config: AttackStreamConfig,
    sink: EventSink,
) -> InjectedAttack:
    """Generate the cohort against ``ratings`` and send its events to ``sink`` (closed after);
    ``ValueError`` when a target has no ratings to attack against."""
    profiles = generate_attack(ratings, targets, config.attack, config.seed)
    sent = 0
    try:
        for user, event in attack_events(profiles, config.start, config.spacing_s, config.watch):
            sink.send(user, format_line(event))
            sent += 1
    finally:
        sink.close()
    return InjectedAttack(profiles, [str(t) for t in targets], sent)
