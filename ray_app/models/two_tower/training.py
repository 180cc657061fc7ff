"""Training the towers: one typed :func:`train` that runs in this process or on Ray Train, and
one epoch loop (:func:`run_epochs`) that both paths share.

* ``num_workers = 0``: a plain in-process torch loop over shuffled numpy batches (for tiny unit
  tests, notebooks and Ray Tune trials), bit-for-bit deterministic with ``seed``, and the only
  path that can call a per-epoch hook in this process.
* ``num_workers ≥ 1``: Ray Train's ``TorchTrainer`` over a Ray Data dataset, DDP across the
  workers; every epoch rank 0 reports with a checkpoint holding ``weights.npz`` (never pickled)
  and ``progress.json``, and a restarted run resumes from ``ray.train.get_checkpoint()``.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ray_app.config import ConfigError
from ray_app.models.base import Feedback, Interactions, feedback_matrix
from ray_app.models.two_tower.config import TwoTowerConfig
from ray_app.models.two_tower.features import TowerInputs
from ray_app.models.two_tower.net import BATCH_KEYS, TowerDims, TwoTowerNet, TwoTowerTask

EpochHook = Callable[[int, TwoTowerNet, dict[str, float]], None]
"""``(epoch, the net at that epoch's weights, training metrics)``; must leave the weights alone."""

Batches = Callable[[int], Iterable[Mapping[str, torch.Tensor]]]
"""The batches of one (0-based) epoch."""


class Trained(NamedTuple):
    """What :func:`train` returns."""

    weights: dict[str, np.ndarray]
    """The net's final weights (:meth:`TwoTowerNet.state_arrays`)."""
    metrics: dict[str, float]
    """The last epoch's metrics (see :meth:`EpochStats.metrics`)."""


def training_columns(
    inter: Interactions, inputs: TowerInputs, feedback: Feedback
) -> dict[str, np.ndarray]:
    """One row per interaction with everything both towers and the loss need (:data:`BATCH_KEYS`)."""
    x = feedback_matrix(inter.matrix, feedback).tocoo()
    users = x.row.astype(np.int64)
    items = x.col.astype(np.int64)
    counts = np.bincount(items, minlength=inter.n_items).astype(np.float64)
    q = counts / max(counts.sum(), 1.0)
    return {
        "user": users + 1,
        "item": items + 1,
        "age": inputs.user_age[users],
        "gender": inputs.user_gender[users],
        "occupation": inputs.user_occupation[users],
        "year": inputs.item_year[items],
        "genres": inputs.item_genres[items],
        # log q(item): how often the item shows up as an in-batch negative.
        "logq": np.log(np.maximum(q[items], 1e-12)).astype(np.float32),
        "weight": np.maximum(x.data, 0.0).astype(np.float32),
    }


@dataclass(frozen=True)
class EpochStats:
    """One epoch's totals (on one worker, or summed over the group)."""

    epoch: int
    """1-based."""
    loss_sum: float
    steps: int
    samples: int
    seconds: float
    """Wall time of the epoch's steps (the slowest worker's, once reduced)."""

    def metrics(self) -> dict[str, float]:
        """``epoch``, mean ``loss`` per step, ``samples`` and ``samples_per_s``."""
        return {
            "epoch": float(self.epoch),
            "loss": self.loss_sum / max(self.steps, 1),
            "samples": float(self.samples),
            "samples_per_s": self.samples / self.seconds if self.seconds > 0 else float("nan"),
        }


def run_epochs(
    task: nn.Module,
    opt: torch.optim.Optimizer,
    epochs: range,
    batches: Batches,
    after_epoch: Callable[[EpochStats], None],
) -> None:
    """The epoch loop of both training paths: a step per batch, then ``after_epoch``.

    ``task`` is a :class:`TwoTowerTask`, possibly wrapped by DDP. It is put back in training
    mode at the start of every epoch because ``after_epoch`` may evaluate the net.
    """
    for epoch in epochs:
        task.train()
        start, total, samples, steps = time.perf_counter(), 0.0, 0, 0
        for batch in batches(epoch):
            if len(batch["user"]) < 2:  # a softmax over one candidate teaches nothing
                continue
            opt.zero_grad(set_to_none=True)
            loss = task(batch)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            samples += len(batch["user"])
            steps += 1
        after_epoch(EpochStats(epoch + 1, total, steps, samples, time.perf_counter() - start))


def _make_task(dims: TowerDims, cfg: TwoTowerConfig) -> TwoTowerTask:
    return TwoTowerTask(TwoTowerNet(dims), cfg.temperature, cfg.id_dropout, cfg.logq_correction)


def _optimizer(task: nn.Module, cfg: TwoTowerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(task.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(
    columns: Mapping[str, np.ndarray],
    dims: TowerDims,
    cfg: TwoTowerConfig,
    on_epoch: EpochHook | None = None,
) -> Trained:
    """Train a :class:`TwoTowerNet` of shape ``dims`` on ``columns`` (:func:`training_columns`).

    In this process when ``cfg.num_workers`` is 0, else on Ray Train (checkpoints under
    ``cfg.storage_path``, or a temporary directory removed afterwards). ``on_epoch`` runs after
    every epoch (Ray Tune reports from it so that ASHA can stop a poor trial early); it needs
    the in-process loop.
    """
    if on_epoch is not None and cfg.num_workers != 0:
        raise ConfigError(
            "per-epoch reporting needs the in-process loop: set num_workers: 0 in the two_tower "
            f"config (got num_workers={cfg.num_workers})"
        )
    if cfg.num_workers == 0:
        return _train_in_process(columns, dims, cfg, on_epoch)
    if cfg.storage_path is not None:
        return _train_with_ray(columns, dims, cfg, cfg.storage_path)
    with tempfile.TemporaryDirectory(prefix="two_tower-") as tmp:
        return _train_with_ray(columns, dims, cfg, tmp)


def _numpy_batches(
    columns: Mapping[str, np.ndarray], batch_size: int, rng: np.random.Generator
) -> Iterator[dict[str, torch.Tensor]]:
    n = len(columns["user"])
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        sel = order[start : start + batch_size]
        yield {k: torch.from_numpy(columns[k][sel]) for k in BATCH_KEYS}


def _train_in_process(
    columns: Mapping[str, np.ndarray],
    dims: TowerDims,
    cfg: TwoTowerConfig,
    on_epoch: EpochHook | None,
) -> Trained:
    """Runs under a forked torch RNG so that seeding does not disturb the caller's global state,
    with one torch thread (restored afterwards)."""
    rng = np.random.default_rng(cfg.seed)
    last: dict[str, float] = {}
    threads = torch.get_num_threads()
    # One intra-op thread: at these batch sizes thread synchronisation costs more than the
    # matmuls, and on a busy machine spinning threads slow a small fit down many times over.
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            task = _make_task(dims, cfg)

            def after_epoch(stats: EpochStats) -> None:
                last.update(stats.metrics())
                if on_epoch is not None:
                    on_epoch(stats.epoch, task.net, dict(last))

            run_epochs(
                task,
                _optimizer(task, cfg),
                range(cfg.epochs),
                lambda _epoch: _numpy_batches(columns, cfg.batch_size, rng),
                after_epoch,
            )
            return Trained(task.net.state_arrays(), last)
    finally:
        torch.set_num_threads(threads)


def _train_worker(config: dict[str, Any]) -> None:
    """Ray Train ``train_loop_per_worker``: DDP over the ``train`` Ray Data shard.

    Reports loss and global samples/s every epoch; rank 0 attaches a checkpoint holding the net
    weights as ``weights.npz`` (never pickled) and the finished epoch. Resumes from the latest
    checkpoint if Ray Train restarts the run after a worker failure.
    """
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    cfg = TwoTowerConfig.model_validate(config["model"])
    dims = TowerDims(**config["dims"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed + rank)
    task = _make_task(dims, cfg)
    first_epoch = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            with np.load(Path(d) / "weights.npz", allow_pickle=False) as z:
                task.net.load_state_arrays({k: z[k] for k in z.files})
            first_epoch = int(json.loads((Path(d) / "progress.json").read_text())["epoch"])
    model = ray.train.torch.prepare_model(task)
    shard = ray.train.get_dataset_shard("train")

    def batches(epoch: int) -> Iterable[Mapping[str, torch.Tensor]]:
        return shard.iter_torch_batches(  # type: ignore[no-any-return]
            batch_size=cfg.batch_size,
            local_shuffle_buffer_size=cfg.shuffle_buffer or None,
            local_shuffle_seed=cfg.seed + 1000 * epoch + rank if cfg.shuffle_buffer else None,
        )

    def after_epoch(stats: EpochStats) -> None:
        if world > 1 and dist.is_initialized():
            # Throughput is the whole group's: sum samples, take the slowest worker's time.
            t = torch.tensor(
                [float(stats.samples), stats.loss_sum, float(stats.steps)], dtype=torch.float64
            )
            dist.all_reduce(t)
            s = torch.tensor([stats.seconds], dtype=torch.float64)
            dist.all_reduce(s, op=dist.ReduceOp.MAX)
            stats = EpochStats(stats.epoch, float(t[1]), int(t[2]), int(t[0]), float(s[0]))
        metrics = stats.metrics()
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            # DDP wraps the task but shares its parameters: task.net is the live net.
            np.savez(Path(tmp) / "weights.npz", **task.net.state_arrays())  # type: ignore[arg-type]
            (Path(tmp) / "progress.json").write_text(json.dumps({"epoch": stats.epoch}))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    run_epochs(model, _optimizer(model, cfg), range(first_epoch, cfg.epochs), batches, after_epoch)


def _train_with_ray(
    columns: Mapping[str, np.ndarray], dims: TowerDims, cfg: TwoTowerConfig, storage_path: str
) -> Trained:
    """``TorchTrainer`` over a Ray Data dataset of the training columns; returns the final
    checkpoint's net weights and the last reported metrics."""
    import pyarrow as pa
    import ray
    import ray.train
    from ray.data.extensions import ArrowTensorArray
    from ray.train.torch import TorchTrainer

    table = pa.table(
        {
            k: ArrowTensorArray.from_numpy(columns[k]) if columns[k].ndim > 1 else columns[k]
            for k in BATCH_KEYS
        }
    )
    # Several blocks per worker so the streaming split can balance them; slicing the table
    # here (zero-copy) avoids a repartition, which would need its own Ray tasks and CPUs.
    n_blocks = max(1, min(64, table.num_rows // 50_000)) * cfg.num_workers
    step = -(-table.num_rows // n_blocks)
    ds = ray.data.from_arrow([table.slice(s, step) for s in range(0, table.num_rows, step)])
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"model": cfg.model_dump(mode="json"), "dims": asdict(dims)},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu),
        run_config=ray.train.RunConfig(
            name=f"two_tower-{uuid.uuid4().hex[:8]}",
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
        datasets={"train": ds},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("Ray Train finished without a checkpoint; see the worker logs")
    with (
        result.checkpoint.as_directory() as d,
        np.load(Path(d) / "weights.npz", allow_pickle=False) as z,
    ):
        weights = {k: z[k] for k in z.files}
    metrics = {k: float(v) for k, v in (result.metrics or {}).items() if _is_number(v)}
    return Trained(weights, metrics)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
