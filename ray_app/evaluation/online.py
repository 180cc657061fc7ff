"""Online evaluation: did users watch what they were recommended?

A reco event *converts* when the same user starts watching one of its items strictly after
the list was shown and at most ``window`` later. Each watch is credited to one list only: the
latest earlier list of that user that contained the movie (last touch), so a movie shown in
three consecutive lists and watched once counts once.

Only *mature* lists — shown at least ``window`` before the newest event in the data — enter
the rates: a list shown a minute ago has had no chance to convert yet, and counting it would
bias whichever variant got traffic last.

What served a list: the ``ab_variant`` and ``model_version`` columns (snapshot schema v2,
written by the JSON dialect) where a row has them; otherwise, for line-dialect and schema-v1
rows, the ``<server>`` field, written ``<variant>@<model>:<version>`` by the serving app and the
simulator (:func:`ray_app.events.reco.parse_server_column`; a plain server name gives variant =
that name, model/version ``unknown``). The model name always comes from ``<server>``.

Everything is vectorised: one explode, one ``merge_asof`` (per user and movie, forward in
time) and group-bys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Gauge, start_http_server, write_to_textfile
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ray_app.config import ConfigError
from ray_app.events.reco import parse_server_column
from ray_app.snapshots.read import load_snapshot_events

log = logging.getLogger(__name__)

GROUP_KEYS = ["variant", "model", "version"]
# What attribute() reads; the last two exist only in snapshots written with schema v2.
_EVENT_COLUMNS = (
    "kind",
    "user_id",
    "movie_id",
    "ts",
    "minute",
    "status",
    "items",
    "server",
    "ab_variant",
    "model_version",
)


def load_attribution_events(snapshot_dir: Path | str) -> pd.DataFrame:
    """The watch and reco rows of every durable snapshot under ``snapshot_dir``, with the
    columns :func:`attribute` reads (the schema-v2 ones only when some file has them)."""
    # Every column is read, not a projection: files written before schema v2 lack the
    # provenance columns, and concatenating whole files fills them with nulls for those rows.
    events = load_snapshot_events(snapshot_dir, ("watch", "reco"))
    return events[[c for c in _EVENT_COLUMNS if c in events.columns]]


def _served_by(reco: pd.DataFrame) -> pd.DataFrame:
    """``variant``, ``model``, ``version`` for each reco row (same index): the ``ab_variant``
    and ``model_version`` columns where set, else what the ``server`` field says."""
    parsed = parse_server_column(reco["server"])
    for column, key in (("ab_variant", "variant"), ("model_version", "version")):
        if column in reco.columns:
            given = reco[column].astype(object)
            given = given.where(given.notna() & (given != ""), None)
            parsed[key] = given.fillna(parsed[key])
    return parsed


def attribute(events: pd.DataFrame, window: timedelta) -> pd.DataFrame:
    """One row per successful reco event with its conversion outcome.

    ``events`` has snapshot columns (kind, user_id, movie_id, ts, status, items, server, and
    optionally minute, ab_variant, model_version). Returns columns reco_id, user_id, ts,
    variant, model, version, n_items, converted (bool), items_watched (int), mature (bool).
    """
    if window <= timedelta(0):
        raise ConfigError(f"attribution window must be positive, got {window}; e.g. 60 minutes")
    out_cols = ["reco_id", "user_id", "ts", *GROUP_KEYS, "n_items", "converted"]
    out_cols += ["items_watched", "mature"]
    if events.empty:
        return pd.DataFrame(columns=out_cols)
    ts = pd.to_datetime(events["ts"], utc=True)
    horizon = ts.max()
    reco = events[(events["kind"] == "reco") & (events["status"].fillna(0) == 200)]
    reco = reco.assign(ts=pd.to_datetime(reco["ts"], utc=True)).reset_index(drop=True)
    reco["reco_id"] = np.arange(len(reco), dtype=np.int64)
    reco = pd.concat([reco, _served_by(reco)], axis=1)
    reco["n_items"] = reco["items"].map(lambda x: 0 if x is None else len(x)).astype(np.int64)

    watch = events[events["kind"] == "watch"]
    watch = watch.assign(ts=pd.to_datetime(watch["ts"], utc=True)).sort_values("ts")
    # A movie watched for 90 minutes is one watch that *starts* once: keep minute-0 events, plus
    # each (user, movie)'s first event in case minute 0 was not captured. Later minutes of a
    # watch begun before the list must not count as a conversion of that list.
    if "minute" in watch.columns:
        first = watch.drop_duplicates(["user_id", "movie_id"])
        watch = pd.concat([watch[watch["minute"] == 0], first])
    watch = watch[["user_id", "movie_id", "ts"]].drop_duplicates()

    shown = reco[["reco_id", "user_id", "ts", "items"]].explode("items", ignore_index=True)
    shown = shown.dropna(subset=["items"]).rename(columns={"items": "movie_id", "ts": "reco_ts"})
    conv = pd.DataFrame(columns=["reco_id", "items_watched"])
    if len(shown) and len(watch):
        # For each watch, the latest earlier reco of the same (user, movie) within the window.
        w = watch.rename(columns={"ts": "watch_ts"}).sort_values("watch_ts")
        s = shown.sort_values("reco_ts")
        s["movie_id"] = s["movie_id"].astype(str)
        w["movie_id"] = w["movie_id"].astype(str)
        matched = pd.merge_asof(
            w,
            s,
            left_on="watch_ts",
            right_on="reco_ts",
            by=["user_id", "movie_id"],
            direction="backward",
            tolerance=pd.Timedelta(window),
            allow_exact_matches=False,
        ).dropna(subset=["reco_id"])
        # Several minute-events of one watch match the same reco: count each movie once.
        matched = matched.drop_duplicates(["reco_id", "movie_id"])
        conv = (
            matched.groupby("reco_id").size().rename("items_watched").reset_index()
            if len(matched)
            else conv
        )
        conv["reco_id"] = conv["reco_id"].astype(np.int64)
    out = reco.merge(conv, on="reco_id", how="left")
    out["items_watched"] = out["items_watched"].fillna(0).astype(np.int64)
    out["converted"] = out["items_watched"] > 0
    out["mature"] = out["ts"] + pd.Timedelta(window) <= horizon
    return out[out_cols]


def conversion_table(attributed: pd.DataFrame, mature_only: bool = True) -> pd.DataFrame:
    """Per (variant, model, version): requests, users, conversions, conversion_rate."""
    a = attributed[attributed["mature"]] if mature_only else attributed
    if a.empty:
        return pd.DataFrame(
            columns=[*GROUP_KEYS, "requests", "users", "conversions", "conversion_rate"]
        )
    g = a.groupby(GROUP_KEYS, sort=True)
    out = pd.DataFrame(
        {
            "requests": g.size(),
            "users": g["user_id"].nunique(),
            "conversions": g["converted"].sum().astype(np.int64),
            "items_watched": g["items_watched"].sum().astype(np.int64),
        }
    ).reset_index()
    out["conversion_rate"] = out["conversions"] / out["requests"]
    return out


@dataclass
class OnlineEvalResult:
    """The files written and the table behind them."""

    attribution_path: Path
    conversion_path: Path
    metrics_path: Path
    conversion: pd.DataFrame
    registry: CollectorRegistry


def conversion_registry(conversion: pd.DataFrame, window: timedelta) -> CollectorRegistry:
    """Prometheus gauges (own registry) for a conversion table."""
    reg = CollectorRegistry()
    labels = GROUP_KEYS
    req = Gauge("ray_app_online_requests", "Mature reco events.", labels, registry=reg)
    conv = Gauge("ray_app_online_conversions", "Converted reco events.", labels, registry=reg)
    rate = Gauge("ray_app_online_conversion_rate", "Conversion rate.", labels, registry=reg)
    users = Gauge("ray_app_online_users", "Users with a mature reco.", labels, registry=reg)
    Gauge("ray_app_online_attribution_window_seconds", "Attribution window.", registry=reg).set(
        window.total_seconds()
    )
    Gauge(
        "ray_app_online_last_eval_timestamp_seconds", "When conversion was computed.", registry=reg
    ).set_to_current_time()
    records: list[dict[Any, Any]] = conversion.to_dict("records")
    for row in records:
        key = (str(row["variant"]), str(row["model"]), str(row["version"]))
        req.labels(*key).set(float(row["requests"]))
        conv.labels(*key).set(float(row["conversions"]))
        rate.labels(*key).set(float(row["conversion_rate"]))
        users.labels(*key).set(float(row["users"]))
    return reg


def run_online_eval(
    snapshot_dir: Path | str,
    window: timedelta,
    out_dir: Path | str,
    *,
    mature_only: bool = True,
) -> OnlineEvalResult:
    """Attribute every reco in ``snapshot_dir``; write Parquet + a Prometheus textfile.

    Writes ``attribution.parquet`` (one row per reco), ``conversion.parquet`` (per variant and
    model version) and ``metrics.prom`` (node-exporter textfile format) under ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    attributed = attribute(load_attribution_events(snapshot_dir), window)
    conversion = conversion_table(attributed, mature_only)
    attributed.to_parquet(out / "attribution.parquet", index=False)
    conversion.to_parquet(out / "conversion.parquet", index=False)
    reg = conversion_registry(conversion, window)
    write_to_textfile(str(out / "metrics.prom"), reg)
    return OnlineEvalResult(
        out / "attribution.parquet",
        out / "conversion.parquet",
        out / "metrics.prom",
        conversion,
        reg,
    )


class _Latest(Collector):
    """Serves whatever registry the last successful round produced."""

    def __init__(self) -> None:
        self.registry: CollectorRegistry | None = None

    def collect(self) -> Iterator[Metric]:
        if self.registry is not None:
            yield from self.registry.collect()


def serve_latest(
    compute: Callable[[], CollectorRegistry],
    *,
    interval_s: float = 60.0,
    port: int | None = None,
    iterations: int | None = None,
    what: str = "online evaluation",
) -> None:
    """Call ``compute`` every ``interval_s`` seconds and serve the gauges of its latest
    successful round on ``port`` (if given); ``iterations=None`` runs until interrupted.

    A failed round is logged and retried at the next, so a half-written snapshot never kills
    the job, and the last good gauges keep being served meanwhile.
    """
    latest = _Latest()
    if port is not None:
        serving = CollectorRegistry()
        serving.register(latest)
        start_http_server(port, registry=serving)
    n = 0
    while iterations is None or n < iterations:
        started = time.monotonic()
        try:
            latest.registry = compute()
        except Exception:  # keep the loop alive; the next round re-reads everything
            log.exception("%s round failed", what)
        n += 1
        if iterations is None or n < iterations:
            time.sleep(max(0.0, interval_s - (time.monotonic() - started)))


def run_online_eval_loop(
    snapshot_dir: Path | str,
    window: timedelta,
    out_dir: Path | str,
    *,
    interval_s: float = 60.0,
    port: int | None = None,
    iterations: int | None = None,
) -> None:
    """Recompute every ``interval_s`` seconds; serve the latest gauges on ``port`` if given
    (see :func:`serve_latest`)."""

    def round_() -> CollectorRegistry:
        result = run_online_eval(snapshot_dir, window, out_dir)
        log.info("online eval: %d variant rows", len(result.conversion))
        return result.registry

    serve_latest(round_, interval_s=interval_s, port=port, iterations=iterations)
