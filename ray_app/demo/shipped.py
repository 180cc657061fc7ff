"""The repository's shipped configs, pointed at the demo's directory and broker.

The demo runs what a user would deploy: ``serve_config.yaml``'s application args,
``configs/train.yaml``, ``configs/retrain.yaml`` and ``configs/ingest.yaml``. Only what the
demo must own is overridden: where snapshots, the registry and the shilling screen's gauges
live, the broker reco events go to, and an admin key generated for the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from ray_app.config import ConfigError, load_config, read_yaml_mapping, validate_config
from ray_app.ingest.config import IngestConfig
from ray_app.retraining.config import RetrainConfig
from ray_app.serving.config import ApiKey, ServeArgs
from ray_app.training.job import TrainConfig

SERVE_CONFIG = "serve_config.yaml"
TRAIN_CONFIG = "configs/train.yaml"
RETRAIN_CONFIG = "configs/retrain.yaml"
INGEST_CONFIG = "configs/ingest.yaml"
APP_NAME = "recommender"
"""The application in ``serve_config.yaml`` the demo serves."""
JSON_TOPIC_KINDS = ("watch", "rate", "reco_responses")
"""JSON-dialect topics ``<prefix>.<kind>`` the demo ingests (the service writes the last)."""


def _file(config_dir: Path, name: str) -> Path:
    path = Path(config_dir) / name
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: run the demo from the repository root or pass "
            "--config-dir pointing at the directory holding serve_config.yaml and configs/"
        )
    return path


C = TypeVar("C", TrainConfig, RetrainConfig)


def _screen_metrics_under(config: C, workdir: Path) -> C:
    """The shilling screen's gauges under the demo's directory, not the shipped location."""
    if config.shilling.metrics_file is None:
        return config
    shilling = config.shilling.model_copy(
        update={"metrics_file": workdir / "metrics" / Path(config.shilling.metrics_file).name}
    )
    return config.model_copy(update={"shilling": shilling})


def train_config(config_dir: Path, workdir: Path, snapshots: str, registry: str) -> TrainConfig:
    """``configs/train.yaml`` on the demo's snapshots and registry."""
    path = _file(config_dir, TRAIN_CONFIG)
    cfg = load_config(TrainConfig, path, snapshot_dir=snapshots, registry=registry)
    return _screen_metrics_under(cfg, workdir)


def retrain_config(config_dir: Path, workdir: Path, snapshots: str, registry: str) -> RetrainConfig:
    """``configs/retrain.yaml`` on the demo's snapshots and registry."""
    path = _file(config_dir, RETRAIN_CONFIG)
    cfg = load_config(RetrainConfig, path, snapshot_dir=snapshots, registry=registry)
    return _screen_metrics_under(cfg, workdir)


def ingest_configs(
    config_dir: Path, snapshots: str, batch_delay_s: float
) -> tuple[IngestConfig, IngestConfig]:
    """Two groups from ``configs/ingest.yaml`` into the same snapshots: the line dialect on its
    topic (the history and the simulated users) and the JSON dialect on ``<prefix>.*`` (the
    service's reco events). ``batch_delay_s`` bounds how long a record waits to be durable."""
    path = _file(config_dir, INGEST_CONFIG)
    base = load_config(IngestConfig, path, snapshot_dir=snapshots, max_batch_delay_s=batch_delay_s)
    prefix = base.json_topic_prefix
    line_topics = base.topics if base.dialect == "line" else ["movielog"]
    line = base.model_copy(
        update={"topics": line_topics, "dialect": "line", "group_id": f"{base.group_id}-line"}
    )
    json = base.model_copy(
        update={
            "topics": [f"{prefix}.{kind}" for kind in JSON_TOPIC_KINDS],
            "dialect": "json",
            "group_id": f"{base.group_id}-json",
        }
    )
    return line, json


def serve_args(
    config_dir: Path, registry: str, bootstrap_servers: str, admin_token_sha256: str
) -> ServeArgs:
    """``serve_config.yaml``'s args of the ``recommender`` app, with the demo's registry, reco
    events to ``bootstrap_servers`` and one more admin key (the hash of the run's token)."""
    path = _file(config_dir, SERVE_CONFIG)
    apps = read_yaml_mapping(path).get("applications") or []
    found = [a for a in apps if isinstance(a, dict) and a.get("name") == APP_NAME]
    if not found:
        raise ConfigError(f"{path}: no application named {APP_NAME!r} under applications")
    args: dict[str, Any] = dict(found[0].get("args") or {})
    keys = [*args.get("api_keys", []), ApiKey(name="demo", role="admin", sha256=admin_token_sha256)]
    args.update(registry=registry, kafka_bootstrap_servers=bootstrap_servers, api_keys=keys)
    return validate_config(ServeArgs, args, path)
