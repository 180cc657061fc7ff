"""The whole pipeline's cost as the data grows: time and peak memory per stage, per size.

Protocol, for each ``--sizes`` value (number of interactions), in a fresh subprocess so each
size's memory is its own:

1. ``generate``: MovieLens-25M-shaped synthetic ratings (:func:`ray_app.data.synth.generate`,
   users and items from :func:`ray_app.data.synth.movielens_sizes`) written as Parquet;
2. ``replay``: the ratings as line-dialect events (``--watch-minutes`` watch events and one rate
   event each) produced to the embedded Tansu broker (:mod:`ray_app.replay.events`);
3. ``ingest``: :func:`ray_app.ingest.run.run_ingest` into Parquet snapshots until idle (the
   figure includes ``--idle-s`` of final idle wait);
4. ``read``: :func:`ray_app.training.data.load_training_data`, the train job's snapshot read
   (Ray Data always with ``--read ray``; by default only above 64 MiB of snapshots), then the
   interactions matrix;
5. ``fit:<model>``: each of ``--models`` built from the catalogue, fitted on every
   interaction and registered (signed) in a registry;
6. ``recommend-all:<model>``: :func:`ray_app.batch.all_users.recommend_all`, top-20 for every
   user with Ray Data.

Per stage it records wall seconds, the driver's peak RSS during the stage (``VmHWM`` reset
through ``/proc/self/clear_refs`` at each stage start) and the Ray object store's peak use
(polled every 0.5 s from the raylets' memory stats, as ``ray memory --stats-only``). Results are appended as JSON lines to
``--results`` (sizes already there are not rerun unless ``--force``), and the table printed
holds every size in that file, with the log-log slope (growth exponent) of each stage's time
and peak RSS over the sizes measured.

    python benchmarks/pipeline_scale.py --sizes 1000000 2000000
    python benchmarks/pipeline_scale.py --sizes 1000000 --models itemknn ease two_tower
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STAGE_ORDER = ("generate", "replay", "ingest", "read")


def log(message: str) -> None:
    """Progress to stderr so stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    # Linux: writing 5 resets VmHWM to the current RSS, so each stage's peak is its own.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _object_store_mib(state: Any) -> float:
    """Object store bytes in use across the cluster, in MiB, from the raylets' memory stats
    (what ``ray memory --stats-only`` prints); ``state`` from ``get_state_from_address``."""
    # Ray has no public call for this; ``ray memory`` itself uses these internals.
    from ray._private.internal_api import get_memory_info_reply

    reply = get_memory_info_reply(state, timeout_seconds=10.0)
    return float(reply.store_stats.object_store_bytes_used) / 2**20


class StageMeter:
    """Times stages; tracks the driver's peak RSS and the object store's peak per stage."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._gcs_state: Any = None

    def object_store_mib(self) -> float:
        """The object store's use now (0 without Ray)."""
        import ray

        if not ray.is_initialized():
            return 0.0
        if self._gcs_state is None:
            from ray._private.internal_api import get_state_from_address

            # This Ray's own address: None would fail when other clusters run on the machine.
            self._gcs_state = get_state_from_address(ray.get_runtime_context().gcs_address)
        return _object_store_mib(self._gcs_state)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Measure the block as stage ``name``; the yielded dict takes extra fields."""
        extra: dict[str, Any] = {}
        peak_store = [0.0]
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.5):
                with contextlib.suppress(Exception):  # a poll racing ray.shutdown is harmless
                    peak_store[0] = max(peak_store[0], self.object_store_mib())

        _reset_peak_rss()
        sampler = threading.Thread(target=poll, daemon=True)
        sampler.start()
        start = time.perf_counter()
        log(f"  {name} …")
        try:
            yield extra
        finally:
            seconds = time.perf_counter() - start
            stop.set()
            sampler.join()
            with contextlib.suppress(Exception):
                peak_store[0] = max(peak_store[0], self.object_store_mib())
            row = {
                "stage": name,
                "seconds": seconds,
                "peak_rss_mib": _status_kib("VmHWM") / 1024,
                "object_store_peak_mib": peak_store[0],
                **extra,
            }
            self.rows.append(row)
            log(f"  {name}: {json.dumps(row)}")


def run_size(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage at ``args.child`` interactions, in this process; returns the size's record."""
    import pandas as pd
    import ray
    from pydantic import SecretStr

    from ray_app.batch.all_users import recommend_all
    from ray_app.broker.embedded import EmbeddedBroker, create_topics
    from ray_app.broker.settings import KafkaSettings
    from ray_app.data.synth import generate, movielens_sizes
    from ray_app.errors import UserError
    from ray_app.ingest.config import IngestConfig
    from ray_app.ingest.run import run_ingest
    from ray_app.models.base import Interactions
    from ray_app.models.catalog import build_model
    from ray_app.registry.signing import SigningConfig
    from ray_app.registry.store import Registry
    from ray_app.replay.events import ReplayConfig, build_lines, produce
    from ray_app.training import interactions as training_interactions
    from ray_app.training.data import load_training_data
    from ray_app.training.interactions import FeedbackConfig

    n = args.child
    n_users, n_items = movielens_sizes(n)
    meter = StageMeter()
    work = Path(tempfile.mkdtemp(prefix=f"pipeline-{n}-", dir=args.work))
    signing = SigningConfig(hmac_key=SecretStr("pipeline-scale-benchmark"))
    ray.init(
        address="local",  # never join a cluster another process left behind
        num_cpus=args.cpus,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        with meter.stage("generate") as extra:
            data = generate(n, n_users, n_items, seed=args.seed, out_dir=work / "synth")
            if data.ratings_path is None:  # generate() always writes it when given out_dir
                raise RuntimeError("synthetic ratings were not written")
            extra["ratings_mib"] = data.ratings_path.stat().st_size / 2**20
        topic = "movielog"
        replay_cfg = ReplayConfig(
            topic=topic, partitions=args.partitions, watch_minutes=args.watch_minutes
        )
        with EmbeddedBroker() as broker:
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
            with meter.stage("replay") as extra:
                ratings = pd.read_parquet(data.ratings_path)
                for col in ("user_id", "item_id"):
                    ratings[col] = ratings[col].astype(str)
                events = build_lines(ratings, replay_cfg)
                del ratings
                create_topics(settings, {topic: args.partitions})
                stats = produce(events, settings.producer_kwargs(), replay_cfg)
                extra["events"] = stats.events
                del events
            ingest_cfg = IngestConfig(
                topics=[topic], snapshot_dir=str(work / "snapshots"), until_idle_s=args.idle_s
            )
            with meter.stage("ingest") as extra:
                ingested = run_ingest(settings, ingest_cfg, consumers=args.consumers)
                extra.update(records=ingested.records, dead_letters=ingested.dead_letters)
                if ingested.first_record_at and ingested.last_flush_at:
                    # First record to last durable batch: without group join and idle wait.
                    extra["busy_s"] = ingested.last_flush_at - ingested.first_record_at
        if args.read == "ray":
            # The benchmark's switch, as in snapshot_read.py: always take the Ray Data path.
            training_interactions.LOCAL_READ_MAX_BYTES = 0  # type: ignore[misc]
        with meter.stage("read") as extra:
            td = load_training_data(work / "snapshots", FeedbackConfig())
            inter = Interactions.from_frame(td.frame, item_ids=td.catalog)
            extra.update(interactions=len(td.frame), files=td.files, read=args.read)
        registry_dir = str(work / "registry")
        registry = Registry(registry_dir, signing)
        fitted: list[str] = []
        for name in args.models:
            config = {"epochs": args.two_tower_epochs} if name == "two_tower" else {}
            try:
                with meter.stage(f"fit:{name}"):
                    model = build_model(name, config).fit(inter)
                    registry.register(model, snapshot=td.provenance)
                    del model
                fitted.append(name)
            except (UserError, MemoryError) as exc:  # e.g. EASE's item cap: a result, recorded
                meter.rows[-1]["error"] = f"{type(exc).__name__}: {exc}"
                log(f"  fit:{name} failed: {exc}")
        del inter, td
        for name in fitted:
            with meter.stage(f"recommend-all:{name}") as extra:
                res = recommend_all(registry_dir, name, work / "recs" / name, k=20, signing=signing)
                extra.update(users=res.users, rows=res.rows)
    finally:
        ray.shutdown()
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return {
        "interactions": n,
        "users": n_users,
        "items": n_items,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": args.cpus,
        "load_avg_1m_at_end": os.getloadavg()[0],
        "stages": meter.rows,
    }


def growth(records: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    """Per stage, the least-squares slope of log(``key``) on log(interactions)."""
    by_stage: dict[str, list[tuple[float, float]]] = {}
    for rec in records:
        for row in rec["stages"]:
            if "error" not in row and row[key] > 0:
                by_stage.setdefault(row["stage"], []).append((rec["interactions"], row[key]))
    return {
        stage: float(np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0])
        for stage, pts in by_stage.items()
        if len({p[0] for p in pts}) >= 2
    }


def table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per stage, seconds / peak RSS / object store per size, then slopes."""
    records = sorted(records, key=lambda r: r["interactions"])
    stages: list[str] = []
    for rec in records:
        stages += [r["stage"] for r in rec["stages"] if r["stage"] not in stages]
    t_slope, m_slope = growth(records, "seconds"), growth(records, "peak_rss_mib")
    sizes = [f"{r['interactions'] / 1e6:g}M" for r in records]
    head = "| stage | " + " | ".join(f"{s}: s / RSS MiB / store MiB" for s in sizes)
    lines = [head + " | time exponent | RSS exponent |", "|---" * (len(sizes) + 3) + "|"]
    for stage in stages:
        cells = []
        for rec in records:
            row = next((r for r in rec["stages"] if r["stage"] == stage), None)
            if row is None:
                cells.append("not run")
            elif "error" in row:
                cells.append(f"failed: {row['error'][:60]}")
            else:
                cells.append(
                    f"{row['seconds']:.1f} / {row['peak_rss_mib']:.0f} / "
                    f"{row['object_store_peak_mib']:.0f}"
                )
        ts = f"{t_slope[stage]:.2f}" if stage in t_slope else "–"
        ms = f"{m_slope[stage]:.2f}" if stage in m_slope else "–"
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {ts} | {ms} |")
    return "\n".join(lines)


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _child_cmd(args: argparse.Namespace, n: int) -> list[str]:
    cmd = [sys.executable, __file__, "--child", str(n), "--seed", str(args.seed)]
    cmd += ["--cpus", str(args.cpus), "--partitions", str(args.partitions)]
    cmd += ["--watch-minutes", str(args.watch_minutes), "--idle-s", str(args.idle_s)]
    cmd += ["--consumers", str(args.consumers), "--read", args.read, "--work", str(args.work)]
    cmd += ["--two-tower-epochs", str(args.two_tower_epochs), "--models", *args.models]
    return cmd + (["--keep"] if args.keep else [])


def main(argv: Sequence[str] | None = None, run: Callable[..., Any] = subprocess.run) -> int:
    """Entry point: runs the sizes not yet in ``--results``, prints the markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--models", nargs="+", default=["itemknn", "ease", "two_tower"])
    p.add_argument("--two-tower-epochs", type=int, default=2)
    p.add_argument("--watch-minutes", type=int, default=1, help="watch events per rating")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--consumers", type=int, default=1)
    p.add_argument("--idle-s", type=float, default=3.0, help="ingest stops after this idle")
    p.add_argument("--read", choices=["auto", "ray"], default="ray")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--results", type=Path, default=Path("pipeline_scale.jsonl"))
    p.add_argument("--force", action="store_true", help="rerun sizes already in --results")
    p.add_argument("--keep", action="store_true", help="keep the data, snapshots, registry")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(run_size(args)))
        return 0
    done = {r["interactions"] for r in _load(args.results)}
    for n in args.sizes:
        if n in done and not args.force:
            log(f"{n:,}: already in {args.results} (--force reruns it)")
            continue
        log(f"{n:,} interactions …")
        res = run(_child_cmd(args, n), stdout=subprocess.PIPE, text=True, check=False)
        if res.returncode != 0:
            log(f"{n:,}: the run failed (exit {res.returncode}); see its output above")
            return res.returncode
        with args.results.open("a") as f:
            f.write(res.stdout.strip().splitlines()[-1] + "\n")
    records = [r for r in _load(args.results) if r["interactions"] in set(args.sizes) | done]
    print(table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
