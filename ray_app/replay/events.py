"""Build the replay stream (vectorised) and produce it to Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from kafka import KafkaProducer
from pydantic import BaseModel, ConfigDict, Field


class ReplayConfig(BaseModel):
    """How ratings become events."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    topic: str = "movielog"
    """Topic the line-dialect events go to."""
    dataset: str = "ml-100k"
    """MovieLens dataset whose ratings are replayed (``ray-app data fetch`` lists them)."""
    partitions: int = Field(default=2, ge=1)
    """Partitions of ``topic`` if it has to be created (an existing topic is left as it is)."""
    watch_minutes: int = Field(default=3, ge=0, le=300)
    """Watch events (minutes 0..n-1) emitted before each rate event."""
    max_events: int | None = Field(default=None, ge=1)
    """Stop after this many events (None: all)."""
    users: int | None = Field(default=None, ge=1)
    """Only the first N users (by id order), for quick demos."""
    rate_per_s: float | None = Field(default=None, gt=0)
    """Throttle production to about this many events per second (None: as fast as possible)."""


@dataclass(frozen=True)
class ReplayStats:
    """What one replay produced."""

    events: int
    watch: int
    """Watch events among ``events``."""
    rate: int
    """Rate events among ``events``."""
    users: int
    movies: int
    seconds: float
    """Production time, throttling included."""


def _iso(ts: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(ts.astype("datetime64[s]"), unit="s")


def build_lines(ratings: pd.DataFrame, config: ReplayConfig) -> pd.DataFrame:
    """Line-dialect events for ``ratings``, sorted by time.

    Each rating becomes ``watch_minutes`` watch events one minute apart, ending one minute
    before the rate event at the rating's timestamp, so a consumer sees watching then rating.
    Returns a frame with ``ts`` (int seconds), ``user_id``, ``line``.
    """
    r = ratings
    if config.users is not None:
        chosen = sorted(pd.unique(r["user_id"]), key=lambda u: (len(u), u))[: config.users]
        r = r[r["user_id"].isin(chosen)]
    user = r["user_id"].to_numpy(dtype=str)
    item = r["item_id"].to_numpy(dtype=str)
    ts = r["timestamp"].to_numpy(dtype=np.int64)
    rating = r["rating"].to_numpy().astype(np.int64).astype(str)
    n = config.watch_minutes
    frames = []
    for m in range(n):
        wts = ts - (n - m) * 60
        line = pd.Series(_iso(wts)) + "," + user + ",GET /data/m/" + item + "/" + str(m) + ".mpg"
        frames.append(pd.DataFrame({"ts": wts, "seq": m, "user_id": user, "line": line}))
    line = pd.Series(_iso(ts)) + "," + user + ",GET /rate/" + item + "=" + rating
    frames.append(pd.DataFrame({"ts": ts, "seq": n, "user_id": user, "line": line}))
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(["ts", "seq"], kind="stable").reset_index(drop=True)
    if config.max_events is not None:
        out = out.iloc[: config.max_events]
    return out[["ts", "user_id", "line"]]


def produce(
    events: pd.DataFrame,
    producer_kwargs: dict[str, object],
    config: ReplayConfig,
    progress: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Send ``events`` (from :func:`build_lines`) to Kafka, keyed by user for per-user order.

    Durable by default (``acks=all`` and idempotence: a retried batch is written once);
    ``producer_kwargs`` (e.g. :meth:`KafkaSettings.producer_kwargs`) may override both.
    """
    options: dict[str, object] = {"acks": "all", "enable_idempotence": True, **producer_kwargs}
    producer = KafkaProducer(linger_ms=20, batch_size=256 * 1024, **options)  # type: ignore[arg-type]
    start = time.monotonic()
    lines = events["line"].to_numpy(dtype=str)
    users = events["user_id"].to_numpy(dtype=str)
    step = 1000
    try:
        for i in range(0, len(lines), step):
            chunk = zip(lines[i : i + step], users[i : i + step], strict=True)
            for line, user in chunk:
                producer.send(config.topic, value=line.encode(), key=user.encode())
            sent = min(i + step, len(lines))
            if progress:
                progress(sent - i)
            if config.rate_per_s:
                # Pace by what was actually sent: a short last chunk must not sleep for a full one.
                ahead = sent / config.rate_per_s - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    kinds = events["line"].str.contains(",GET /rate/", regex=False)
    return ReplayStats(
        events=len(events),
        watch=int((~kinds).sum()),
        rate=int(kinds.sum()),
        users=int(events["user_id"].nunique()),
        movies=int(events["line"].str.extract(r"/(?:m|rate)/([^/=]+)")[0].nunique()),
        seconds=time.monotonic() - start,
    )
