"""``ray-app state``: run the state consumer group, or look at what the store holds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from ray_app.commands.common import (
    BootstrapOpt,
    ConfigOpt,
    RayAddressOpt,
    console,
    kafka_settings,
)
from ray_app.config import load_config
from ray_app.state.config import StateConfig, StateConsumerConfig

StoreOpt = Annotated[
    str | None, typer.Option("--store", help="actor (embedded, the default) | redis")
]
RedisOpt = Annotated[str | None, typer.Option("--redis-url", help="Redis URL for --store redis.")]


def _state(base: StateConfig, store: str | None, redis_url: str | None) -> StateConfig:
    fields = base.model_dump()
    fields.update({k: v for k, v in {"kind": store, "url": redis_url}.items() if v is not None})
    return load_config(StateConfig, None, **fields)


def consume_cmd(
    bootstrap_servers: BootstrapOpt = "",
    topic: Annotated[
        list[str] | None, typer.Option("--topic", "-t", help="Activity topic(s).")
    ] = None,
    dialect: Annotated[str | None, typer.Option(help="line | json")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group id.")] = None,
    store: StoreOpt = None,
    redis_url: RedisOpt = None,
    consumers: Annotated[int, typer.Option(min=1, help="Consumer actors in the group.")] = 1,
    metrics_port: Annotated[
        int | None, typer.Option(help="Consumer i serves Prometheus /metrics on PORT+i.")
    ] = None,
    config: ConfigOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Keep users' recent history and trending items fresh from the topics (Ctrl-C stops).

    A status line every 5 s: events applied, replays skipped, event-to-state lag.
    """
    from ray_app.runtime import init_ray
    from ray_app.state.group import StateConsumerGroup

    cfg = load_config(
        StateConsumerConfig, config, topics=topic or None, dialect=dialect, group_id=group
    )
    cfg = cfg.model_copy(update={"state": _state(cfg.state, store, redis_url)})
    settings = kafka_settings(bootstrap_servers)
    init_ray(ray_address)
    group_ = StateConsumerGroup(settings, cfg, consumers, metrics_port).start()
    console.print(
        f"state consumer group {cfg.group_id!r} on {', '.join(cfg.topics)} → "
        f"{cfg.state.kind} store; Ctrl-C stops"
    )
    try:
        while True:
            time.sleep(5)
            stats = group_.stats()
            lags = [s.last_lag_s for s in stats if s.last_lag_s is not None]
            lag = f"{max(lags):.2f}s" if lags else "-"
            console.print(
                f"applied {sum(s.applied for s in stats)}, replays skipped "
                f"{sum(s.skipped for s in stats)}, other records {sum(s.ignored for s in stats)}, "
                f"newest event-to-state lag {lag}"
            )
    except KeyboardInterrupt:
        group_.stop()


def show_cmd(
    user: Annotated[list[str], typer.Argument(help="User id(s) whose history to print.")],
    store: StoreOpt = None,
    redis_url: RedisOpt = None,
    trending: Annotated[int, typer.Option(min=0, help="Also print the top N trending.")] = 10,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML of StateConfig fields.")
    ] = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Print users' recent history (newest first) and the trending items."""
    from ray_app.state.open_store import open_store

    cfg = _state(load_config(StateConfig, config), store, redis_url)
    kind: Literal["actor", "redis"] = cfg.kind
    if kind == "actor":
        from ray_app.runtime import init_ray

        init_ray(ray_address or "auto")
    s = open_store(cfg)
    for u, hist in zip(user, s.histories(user), strict=True):
        items = ", ".join(
            h.item_id + (f" ({h.rating:g})" if h.rating is not None else "") for h in hist
        )
        console.print(f"{u}: {items or '(no events)'}")
    if trending:
        top = s.trending(trending, time.time())
        console.print("trending: " + ", ".join(f"{i} {c:.1f}" for i, c in top))
    size = s.size()
    console.print(f"{size.users} users, {size.entries} history entries, {size.items} items")


def register(root: typer.Typer) -> None:
    """Add the ``state`` group (``consume``, ``show``) to ``root``."""
    state = typer.Typer(
        help="Fresh user state: the consumer that keeps it, and what it holds.",
        no_args_is_help=True,
    )
    state.command("consume")(consume_cmd)
    state.command("show")(show_cmd)
    root.add_typer(state, name="state")
