"""``ray-app data``: fetch MovieLens, generate MovieLens-shaped synthetic data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ray_app.commands.common import console, progress_bar


def fetch_cmd(
    name: Annotated[
        str, typer.Argument(help="ml-100k | ml-1m | ml-25m | ml-latest-small")
    ] = "ml-100k",
    root: Annotated[
        Path | None, typer.Option(help="Cache directory (default: user cache dir).")
    ] = None,
) -> None:
    """Download (official GroupLens zip, else the recbole wheel copy for ml-100k) and verify."""
    from ray_app.data.movielens import load

    ml = load(name, root)
    console.print(
        f"{ml.name}: {len(ml.ratings):,} ratings, {ml.ratings.user_id.nunique():,} users, "
        f"{len(ml.movies):,} movies (source: {ml.source})"
    )


def synth_cmd(
    out: Annotated[Path, typer.Option("--out", help="Output directory for the Parquet files.")],
    interactions: Annotated[
        int, typer.Option("--interactions", min=1, help="Number of (user, item) ratings.")
    ] = 1_000_000,
    users: Annotated[
        int | None,
        typer.Option(
            "--users", min=1, help="Number of users [default: ML-25M's shape at this size]."
        ),
    ] = None,
    items: Annotated[
        int | None,
        typer.Option(
            "--items", min=1, help="Number of items [default: ML-25M's shape at this size]."
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (output is deterministic).")] = 0,
) -> None:
    """Generate MovieLens-25M-shaped synthetic data as Parquet, scaled by ``--interactions``.

    Item popularity has a flat head (the top movie rated by about half the users) and a
    power-law tail, user activity is log-normal; ``--interactions 25000000`` is full size
    (162,000 users, 59,000 items).
    """
    from ray_app.data.synth import generate, movielens_sizes

    default_users, default_items = movielens_sizes(interactions)
    users, items = users or default_users, items or default_items

    start = time.perf_counter()
    with progress_bar("generating") as update:
        data = generate(interactions, users, items, seed, out_dir=out, progress=update)
    secs = time.perf_counter() - start
    if data.ratings_path is None:  # generate() always writes ratings when given out_dir
        raise RuntimeError(f"synthetic ratings were not written under {out}")
    size = data.ratings_path.stat().st_size / 2**20
    console.print(
        f"[green]wrote[/green] {data.n_interactions:,} ratings of {users:,} users on "
        f"{items:,} items to {out} ({size:.0f} MiB ratings.parquet, movies.parquet, "
        f"users.parquet) in {secs:.1f} s"
    )


def register(app: typer.Typer) -> None:
    """Add the ``data`` group (``fetch``, ``synth``) to ``app``."""
    data = typer.Typer(
        help="Datasets: fetch MovieLens, generate synthetic data.", no_args_is_help=True
    )
    data.command("fetch")(fetch_cmd)
    data.command("synth")(synth_cmd)
    app.add_typer(data, name="data")
