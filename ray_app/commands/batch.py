"""``ray-app recommend-batch`` (fit on files, rank listed users) and ``ray-app recommend-all``
(every user of a registry version, with Ray Data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ray_app.commands.common import DEFAULT_REGISTRY, RayAddressOpt, RegistryOpt, console
from ray_app.config import read_yaml_mapping


def recommend_batch_cmd(
    train: Annotated[
        Path, typer.Option("--train", help="TRAIN.parquet: user_id, item_id [, rating, timestamp].")
    ],
    users: Annotated[
        Path,
        typer.Option(
            "--users", help="USERS.parquet: user_id [, age, gender, occupation for cold start]."
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model", help="popularity | itemknn | userknn | ease | two_tower (see `MODELS`)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="OUT.parquet: user_id, rank, item_id, score.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML mapping of model config fields (default: defaults)."),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Items per user.")] = 10,
) -> None:
    """Fit MODEL on TRAIN and write the top-K unseen items for every USERS user.

    Users the model cannot score (not in TRAIN, or no usable history) get the most popular
    TRAIN items; those rows have score NaN.
    """
    from ray_app.batch.files import recommend_batch

    cfg = read_yaml_mapping(config) if config is not None else None
    with console.status(f"fitting {model} and ranking…"):
        r = recommend_batch(train, users, model, cfg, k, out, progress=console.log)
    table = Table("", "value", title=f"recommend-batch: {model}, top-{k}")
    for name, value in (
        ("train interactions", f"{r.train_interactions:,}"),
        ("train users x items", f"{r.train_users:,} x {r.train_items:,}"),
        ("users listed", f"{r.users:,}"),
        ("scored by the model", f"{r.model_scored:,}"),
        ("cold (scored from features)", f"{r.cold_scored:,}"),
        ("with popularity fill", f"{r.popularity_filled:,}"),
        ("rows written", f"{r.rows:,}"),
        ("fit", f"{r.fit_s:.2f} s"),
        ("recommend", f"{r.recommend_s:.2f} s"),
    ):
        table.add_row(name, value)
    console.print(table)
    console.print(f"[green]wrote[/green] {r.out_path}")


def recommend_all_cmd(
    model: Annotated[str, typer.Option(help="Registry model name.")] = "ease",
    out: Annotated[Path, typer.Option(help="Output directory (Parquet).")] = Path(
        "data/recommendations"
    ),
    registry: RegistryOpt = DEFAULT_REGISTRY,
    version: Annotated[str | None, typer.Option(help="Version (default: latest).")] = None,
    k: Annotated[int, typer.Option(min=1, max=1000, help="Items per user.")] = 20,
    ray_address: RayAddressOpt = None,
) -> None:
    """Ray Data batch inference: top-k for every user a registry version knows.

    Users the model cannot score get the most popular unseen items; those rows have score NaN.
    """
    from ray_app.batch.all_users import recommend_all
    from ray_app.runtime import init_ray

    init_ray(ray_address)
    r = recommend_all(registry, model, out, version=version, k=k)
    console.print(
        f"{model} {r.version}: {r.model_scored:,} of {r.users:,} users scored by the model, "
        f"{r.popularity_filled:,} with popularity fill, {r.rows:,} rows → {r.out_dir}"
    )


def register(app: typer.Typer) -> None:
    """Add ``recommend-batch`` and ``recommend-all`` to ``app``."""
    app.command("recommend-batch")(recommend_batch_cmd)
    app.command("recommend-all")(recommend_all_cmd)
