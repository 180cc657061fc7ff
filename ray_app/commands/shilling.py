"""``ray-app shilling detect``: score every user of a ratings file for shilling;
``ray-app shilling inject``: send an attack cohort to the activity topic like real users."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_app.commands.common import BootstrapOpt, console, user_errors
from ray_app.config import validate_config
from ray_app.errors import UserError


def detect_cmd(
    ratings: Annotated[Path, typer.Option(help="Parquet or CSV with user_id,item_id,rating[,ts].")],
    out: Annotated[Path, typer.Option(help="Output .parquet or .csv: user_id,score,flagged.")],
    threshold: Annotated[float, typer.Option(help="Flag scores above this robust z.")] = 3.5,
    flag_budget: Annotated[
        float, typer.Option(help="Flag at most this share of the scored users.")
    ] = 0.1,
    min_profile: Annotated[int, typer.Option(help="Score users with this many rows.")] = 10,
) -> None:
    """Score users with the unsupervised detector the train step uses; flag the outliers."""
    from ray_app.shilling.detector import ShillingConfig, read_ratings, score_users, write_scores

    cfg = validate_config(
        ShillingConfig,
        {"threshold": threshold, "flag_budget": flag_budget, "min_profile": min_profile},
    )
    scores = score_users(read_ratings(ratings), cfg)
    path = write_scores(scores, out)
    scored = int(scores["score"].notna().sum())
    flagged = int(scores["flagged"].sum())
    console.print(
        f"{len(scores):,} users, {scored:,} scored, {flagged:,} flagged "
        f"(threshold {cfg.threshold}, budget {cfg.flag_budget:.0%} = "
        f"{int(cfg.flag_budget * scored):,}); wrote {path}"
    )


def inject_cmd(
    target: Annotated[list[str], typer.Option(help="Item id to push (repeat for several).")],
    kind: Annotated[
        str, typer.Option(help="random, average, bandwagon or average_over_popular.")
    ] = "bandwagon",
    size: Annotated[float, typer.Option(help="Fake users as a share of the genuine users.")] = 0.05,
    filler_size: Annotated[
        float, typer.Option(help="Filler items per profile as a share of the catalogue.")
    ] = 0.03,
    dataset: Annotated[str, typer.Option(help="MovieLens variant the genuine users are.")] = (
        "ml-100k"
    ),
    bootstrap_servers: BootstrapOpt = "",
    topic: Annotated[str, typer.Option(help="Line-dialect activity topic.")] = "movielog",
    to_file: Annotated[
        Path | None, typer.Option(help="Append event lines to this file instead of Kafka.")
    ] = None,
    start: Annotated[str, typer.Option(help="ISO time of the first event.")] = (
        "2026-01-01T00:00:00+00:00"
    ),
    seed: Annotated[int, typer.Option(help="Random seed of the profiles.")] = 0,
) -> None:
    """Inject a shilling cohort (watch + rate events of fake users) onto the activity topic."""
    from datetime import datetime

    from ray_app.data.movielens import load
    from ray_app.simulation.attack_stream import AttackStreamConfig, inject_attack
    from ray_app.simulation.run import EventSink, FileSink, KafkaSink

    try:
        first = datetime.fromisoformat(start)
    except ValueError as exc:
        raise UserError(f"--start {start!r} is not an ISO time; use e.g. 2026-01-01T00:00") from exc
    cfg = validate_config(
        AttackStreamConfig,
        {
            "attack": {"kind": kind, "size": size, "filler_size": filler_size},
            "start": first,
            "seed": seed,
        },
    )
    ratings = load(dataset).ratings
    with user_errors(ValueError):  # a target the data set has no ratings for
        if to_file is not None:
            sink: EventSink = FileSink(str(to_file))
            done = inject_attack(ratings, target, cfg, sink)
        else:
            from ray_app.broker.embedded import kafka_endpoint

            with kafka_endpoint(bootstrap_servers) as servers:
                done = inject_attack(ratings, target, cfg, KafkaSink(servers, topic))
    console.print(f"{cfg.attack.kind} attack: {done.summary()} → {to_file or topic}")


def register(app: typer.Typer) -> None:
    """Add the ``shilling`` group (``detect``, ``inject``) to ``app``."""
    group = typer.Typer(help="Shilling (fake-profile) detection.", no_args_is_help=True)
    group.command("detect")(detect_cmd)
    group.command("inject")(inject_cmd)
    app.add_typer(group, name="shilling")
