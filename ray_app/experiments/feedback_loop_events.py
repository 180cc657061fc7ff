"""The feedback loop's activity as snapshots: ratings and watches become line-dialect records,
parsed by the ingest parser and committed as offset-named batches, so every cycle's training
reads its data exactly as the train job does (:func:`~ray_app.training.data.load_training_data`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from ray_app.events.line_dialect import format_time, parse_line_batch
from ray_app.snapshots.protocol import BatchId
from ray_app.snapshots.store import SnapshotStore

TOPIC = "movielog"


def rate_lines(frame: pd.DataFrame, at: datetime) -> list[bytes]:
    """``user_id, item_id, rating`` rows as rate lines stamped ``at``."""
    head = f"{format_time(at)},"
    rating = frame["rating"].astype(np.float64).map(lambda r: f"{r:g}")
    text = head + frame["user_id"].astype(str) + ",GET /rate/" + frame["item_id"].astype(str)
    return (text + "=" + rating).str.encode("utf-8").tolist()


def watch_lines(users: np.ndarray, items: np.ndarray, at: datetime) -> list[bytes]:
    """One first-minute watch line per ``(users[i], items[i])`` stamped ``at``."""
    frame = pd.DataFrame({"u": users.astype(str), "m": items.astype(str)})
    text = f"{format_time(at)}," + frame["u"] + ",GET /data/m/" + frame["m"] + "/0.mpg"
    return text.str.encode("utf-8").tolist()


@dataclass
class ActivityLog:
    """Appends batches of event lines to one snapshot location, offsets continuing."""

    store: SnapshotStore
    start: datetime
    next_offset: int = 0
    batches: list[BatchId] = field(default_factory=list)

    def at(self, cycle: int) -> datetime:
        """Event time of ``cycle`` (a day per cycle, so time-based readers see the order)."""
        return self.start + timedelta(days=cycle)

    def append(self, lines: list[bytes]) -> int:
        """Parse and commit ``lines`` as one batch; returns the records written. A line the
        parser refuses goes to the batch's dead letters, as in ingest."""
        if not lines:
            return 0
        first = self.next_offset
        offsets = list(range(first, first + len(lines)))
        parsed = parse_line_batch(lines, topic=TOPIC, partitions=0, offsets=offsets)
        batch = BatchId(TOPIC, 0, first, first + len(lines) - 1)
        self.store.write_batch(batch, parsed.good, parsed.dead)
        self.batches.append(batch)
        self.next_offset += len(lines)
        return parsed.good.num_rows
