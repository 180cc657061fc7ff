"""Throughput of the vectorised event parsers.

Generates N synthetic records (80% watch, 12% rate, 8% recommendation lines, a small fraction
malformed), then times ``parse_line_batch`` (or ``parse_json_batch`` with ``--dialect json``:
watch records, or with ``--json-kind reco_responses`` the service's schema-v2 reco events) over
consecutive batches, as a consumer would call it. Generation is not timed. Prints records/s and
the good/dead split.

    .venv/bin/python benchmarks/parse_throughput.py            # 1M line records, 10k batches
    .venv/bin/python benchmarks/parse_throughput.py --dialect json --records 200000
    .venv/bin/python benchmarks/parse_throughput.py --dialect json --json-kind reco_responses
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from ray_app.events import format_json, parse_json_batch, parse_line_batch
from ray_app.events.reco import served_reco_event

_SLUGS = [
    "the+green+mile+1999",
    "amélie+2001",
    "the+matrix+1999+",
    "spirited+away+2001",
    "léon+the+professional+1994",
    "12+angry+men+1957",
]


def _movie(rng: random.Random) -> str:
    return rng.choice(_SLUGS) if rng.random() < 0.5 else str(rng.randrange(1, 30_000))


def make_lines(n: int, bad_fraction: float, seed: int = 0) -> list[bytes]:
    """Synthetic line-dialect records with a realistic mix of kinds and time formats."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    out: list[bytes] = []
    for i in range(n):
        ts = start + timedelta(microseconds=rng.randrange(10**13))
        digits = rng.choice((0, 0, 3, 6, 9))
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S")
        if digits:
            stamp += "." + f"{ts.microsecond:06d}{rng.randrange(1000):03d}"[:digits]
        user = str(rng.randrange(1, 1_000_000))
        roll = rng.random()
        if roll < bad_fraction:
            line = f"{stamp},{user},GET /rate/{_movie(rng)}=9"
        elif roll < 0.80:
            line = f"{stamp},{user},GET /data/m/{_movie(rng)}/{rng.randrange(200)}.mpg"
        elif roll < 0.92:
            line = f"{stamp},{user},GET /rate/{_movie(rng)}={rng.randint(1, 5)}"
        else:
            items = ", ".join(_movie(rng) for _ in range(20))
            line = (
                f"{stamp},{user},recommendation request host-{i % 8}:8082, status 200, "
                f"result: {items}, {rng.randrange(5, 900)} ms"
            )
        out.append(line.encode())
    return out


def make_json(n: int, bad_fraction: float, seed: int = 0) -> list[bytes]:
    """Synthetic JSON watch records."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for _ in range(n):
        minute = -1 if rng.random() < bad_fraction else rng.randrange(200)
        record = {
            "ts": 1_700_000_000 + rng.randrange(10**7) + rng.randrange(10**6) / 1e6,
            "user_id": rng.randrange(1, 1_000_000),
            "movie_id": _movie(rng),
            "minute": minute,
        }
        out.append(json.dumps(record, ensure_ascii=False).encode())
    return out


def make_json_reco(n: int, bad_fraction: float, seed: int = 0) -> list[bytes]:
    """Synthetic JSON reco responses as the serving app writes them (schema v2)."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    out: list[bytes] = []
    for _ in range(n):
        variant, model, version = rng.choice(
            [("A", "ease", "v20260101T000000Z"), ("B", "itemknn", "v20260102T000000Z")]
        )
        latency = -1.0 if rng.random() < bad_fraction else rng.randrange(500, 90_000) / 1000
        event = served_reco_event(
            user_id=str(rng.randrange(1, 1_000_000)),
            items=[_movie(rng) for _ in range(20)],
            variant=variant,
            model=model,
            version=version,
            latency_ms=latency,
            request_id=f"{rng.getrandbits(64):016x}",
            ts=start + timedelta(microseconds=rng.randrange(10**13)),
        )
        out.append(format_json(event))
    return out


def main() -> None:
    """Run the benchmark and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records to parse")
    parser.add_argument("--batch-size", type=int, default=10_000, help="records per call")
    parser.add_argument("--bad-fraction", type=float, default=0.001, help="malformed share")
    parser.add_argument("--dialect", choices=("line", "json"), default="line")
    parser.add_argument(
        "--json-kind", choices=("watch", "reco_responses"), default="watch", help="JSON records"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; best is reported")
    args = parser.parse_args()

    kind = args.json_kind
    if args.dialect == "line":
        make = make_lines
    else:
        make = make_json if kind == "watch" else make_json_reco
    what = "line dialect" if args.dialect == "line" else f"json dialect ({kind})"
    print(f"generating {args.records:,} {what} records …", flush=True)
    values = make(args.records, args.bad_fraction)
    batches = [
        (values[i : i + args.batch_size], list(range(i, min(i + args.batch_size, len(values)))))
        for i in range(0, len(values), args.batch_size)
    ]

    def run_once() -> tuple[float, float, int, int]:
        good = dead = 0
        c0 = time.process_time()
        t0 = time.perf_counter()
        for chunk, offs in batches:
            if args.dialect == "line":
                result = parse_line_batch(chunk, topic="movielog", partitions=0, offsets=offs)
            else:
                result = parse_json_batch(
                    chunk, kind=kind, topic=f"events.{kind}", partitions=0, offsets=offs
                )
            good += result.good.num_rows
            dead += result.dead.num_rows
        return time.perf_counter() - t0, time.process_time() - c0, good, dead

    run_once()  # warm-up: first-call regex compilation and allocator growth
    timings: list[float] = []
    cpu_timings: list[float] = []
    good = dead = 0
    for r in range(args.repeats):
        elapsed, cpu, good, dead = run_once()
        timings.append(elapsed)
        cpu_timings.append(cpu)
        print(
            f"  pass {r + 1}: {elapsed:.2f} s wall, {cpu:.2f} s CPU "
            f"({args.records / elapsed:,.0f} records/s)",
            flush=True,
        )
    # CPU time is reported too because wall time on a shared machine includes waiting for a core.
    print(
        f"{what}, {args.records:,} records in batches of {args.batch_size:,}: "
        f"best {args.records / min(timings):,.0f} records/s wall, median "
        f"{args.records / statistics.median(timings):,.0f} records/s wall, best "
        f"{args.records / min(cpu_timings):,.0f} records/s per CPU-second "
        f"({good:,} good, {dead:,} dead per pass)"
    )


if __name__ == "__main__":
    main()
