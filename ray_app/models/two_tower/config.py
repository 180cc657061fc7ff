"""The two-tower model's one config, shared by the recommender and the training loop."""

from __future__ import annotations

from pydantic import Field

from ray_app.models.base import Feedback, ModelConfig


class TwoTowerConfig(ModelConfig):
    """Configuration for :class:`~ray_app.models.two_tower.TwoTower`."""

    embedding_dim: int = Field(default=64, ge=2)
    """Width of the output (retrieval) vectors and of the id embeddings."""
    hidden: int = Field(default=128, ge=0)
    """Width of each tower's hidden layer; 0 means a single linear projection."""
    epochs: int = Field(default=40, ge=1)
    """Passes over all interactions. The default is the best known on MovieLens-100K (see
    BENCHMARKS.md); fewer epochs train proportionally faster."""
    batch_size: int = Field(default=1024, ge=2)
    """Rows per step (per worker); every other item in the batch is a negative."""
    lr: float = Field(default=0.005, gt=0.0)
    """AdamW learning rate."""
    temperature: float = Field(default=0.1, gt=0.0)
    """Softmax temperature applied to cosine similarities."""
    weight_decay: float = Field(default=1e-6, ge=0.0)
    """AdamW decoupled weight decay."""
    id_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of ids replaced by the cold slot in training, so features alone learn to score."""
    logq_correction: bool = True
    """Subtract ``log q(item)`` from in-batch logits (removes the popularity bias of sampling)."""
    feedback: Feedback = "binary"
    """``binary``: each interaction is one positive; ``weighted``: its loss is scaled by its
    weight (e.g. watch minutes)."""
    seed: int = 0
    """Seeds initialisation, shuffling and id dropout."""
    num_workers: int = Field(default=1, ge=0)
    """Ray Train workers. ``0`` trains in this process without Ray (for tiny unit tests,
    notebooks and Ray Tune trials; bit-for-bit deterministic with ``seed``); ``≥ 1`` uses
    ``TorchTrainer`` with a Ray Data dataset, checkpoints every epoch and DDP across workers."""
    use_gpu: bool = False
    """Give each Ray Train worker a GPU (ignored when ``num_workers = 0``)."""
    storage_path: str | None = None
    """Where Ray Train keeps run state and checkpoints; ``None``: a temporary directory that is
    removed after training."""
    shuffle_buffer: int = Field(default=100_000, ge=0)
    """Ray Data local shuffle buffer (rows) per worker; 0 disables it."""
