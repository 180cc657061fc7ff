"""``ray-app shilling detect``: score every user of a ratings file for shilling."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_app.commands.common import console
from ray_app.config import validate_config


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


def register(app: typer.Typer) -> None:
    """Add the ``shilling`` group (``detect``) to ``app``."""
    group = typer.Typer(help="Shilling (fake-profile) detection.", no_args_is_help=True)
    group.command("detect")(detect_cmd)
    app.add_typer(group, name="shilling")
