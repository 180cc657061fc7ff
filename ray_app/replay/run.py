"""Replay a MovieLens dataset into Kafka: the stage ``ray-app replay`` and the demo run."""

from __future__ import annotations

from collections.abc import Callable

from ray_app.broker.embedded import create_topics
from ray_app.broker.settings import KafkaSettings
from ray_app.data.movielens import load
from ray_app.replay.events import ReplayConfig, ReplayStats, build_lines, produce


def replay_movielens(
    settings: KafkaSettings,
    config: ReplayConfig,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayStats:
    """Produce ``config.dataset``'s ratings as line-dialect events to ``config.topic``.

    ``settings`` must name the bootstrap servers (start an embedded broker first with
    :func:`ray_app.broker.embedded.kafka_endpoint` if there are none); the topic is created
    with ``config.partitions`` partitions if it does not exist. ``progress(done, total)`` is
    called as events are sent.
    """
    events = build_lines(load(config.dataset).ratings, config)
    create_topics(settings, {config.topic: config.partitions})
    total = len(events)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    return produce(events, settings.producer_kwargs(), config, progress=advance)
