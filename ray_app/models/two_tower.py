"""Two-tower retrieval model (Yi et al., RecSys 2019) in PyTorch, trained on Ray Train.

Laid out like torchrec's ``examples/retrieval``, as separate pieces with a tested conversion
between them:

* :class:`TwoTowerNet` - the two towers. User tower: user-id embedding + age bucket, gender and
  occupation embeddings → MLP → L2-normalised vector. Item tower: item-id embedding + genres
  (multi-hot, mean of genre embeddings) + release-year bucket → MLP → L2-normalised vector.
  Id 0 in both id tables is the "cold" slot: ids are shifted by one, and during training a
  fraction (``id_dropout``) of ids is replaced by 0 so that the towers learn to answer from
  features alone. That is what scores a new user from demographics and a new item from content.
* :class:`TwoTowerTask` - the net plus its training objective: in-batch sampled softmax with
  temperature and log-Q correction (each logit minus ``log q(item)``, where ``q`` is the item's
  sampling frequency, which is how often it appears as an in-batch negative), with accidental
  hits (the same item elsewhere in the batch) masked out.
* :class:`TwoTowerIndex` - the serving form: one user-embedding matrix and one item-embedding
  matrix computed once after training (:meth:`TwoTowerIndex.from_net`); scoring is a matmul.
* :class:`TwoTower` - the :class:`~ray_app.models.base.Recommender`. ``fit`` trains with Ray
  Train's ``TorchTrainer`` from a Ray Data dataset (``num_workers ≥ 1``, with checkpoints and
  ``ray.train.report`` every epoch) or, with ``num_workers = 0``, with a plain in-process torch
  loop for tiny unit tests and notebooks. Both run the same step function.

Feature frames come from :class:`~ray_app.models.base.Interactions`: ``item_features`` with
``item_id`` (column or index), optional ``genres`` (list of str, or ``|``-separated str) and
``year``; ``user_features`` with ``user_id``, optional ``age``, ``gender``, ``occupation`` -
exactly the ``movies`` and ``users`` frames of :mod:`ray_app.data.movielens` and
:mod:`ray_app.data.synth`. Missing features are fine: they map to the "unknown" bucket.

Persistence stores every tensor as a numpy array in ``state.npz``; nothing is pickled and
``torch.load`` is never called, also not for Ray Train checkpoints (they hold ``weights.npz``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ray_app.models.base import (
    Interactions,
    ModelConfig,
    Recommendations,
    Recommender,
    top_k_indices,
)
from ray_app.models.similarity import Feedback, feedback_matrix

log = logging.getLogger(__name__)

AGE_EDGES = np.array([18, 25, 35, 45, 50, 56], dtype=np.float64)
"""MovieLens-1M's age bands: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ (buckets 1..7)."""
YEAR_EDGES = np.array(
    [1940, 1950, 1960, 1970, 1980, 1985, 1990, 1995, 2000, 2005, 2010, 2015, 2020],
    dtype=np.float64,
)
"""Release-year bucket edges (buckets 1..14); finer where the catalogue is dense."""
_DIM_NAMES = (
    "n_users",
    "n_items",
    "n_age",
    "n_gender",
    "n_occupation",
    "n_genres",
    "n_year",
    "embedding_dim",
    "hidden",
)
_BATCH_KEYS = ("user", "item", "age", "gender", "occupation", "year", "genres", "logq", "weight")


class TwoTowerConfig(ModelConfig):
    """Configuration for :class:`TwoTower`."""

    embedding_dim: int = Field(default=64, ge=2)
    """Width of the output (retrieval) vectors and of the id embeddings."""
    hidden: int = Field(default=128, ge=0)
    """Width of each tower's hidden layer; 0 means a single linear projection."""
    epochs: int = Field(default=20, ge=1)
    """Passes over all interactions."""
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
    """Ray Train workers. ``0`` trains in this process without Ray (for tiny unit tests and
    notebooks; bit-for-bit deterministic with ``seed``); ``≥ 1`` uses ``TorchTrainer`` with
    a Ray Data dataset, checkpoints every epoch and DDP across workers."""
    use_gpu: bool = False
    """Give each Ray Train worker a GPU (ignored when ``num_workers = 0``)."""
    storage_path: str | None = None
    """Where Ray Train keeps run state and checkpoints; ``None``: a temporary directory that is
    removed after ``fit``."""
    shuffle_buffer: int = Field(default=100_000, ge=0)
    """Ray Data local shuffle buffer (rows) per worker; 0 disables it."""


# ---- features ----------------------------------------------------------------------------
def _bucket(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    """1-based bucket per value; 0 where the value is missing."""
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    out = np.digitize(np.nan_to_num(x, nan=0.0), edges) + 1
    out[np.isnan(x)] = 0
    return out.astype(np.int64)


def _codes(values: pd.Series, vocab: np.ndarray) -> np.ndarray:
    """1-based position of each value in ``vocab``; 0 for missing or unseen values."""
    idx = pd.Index(vocab).get_indexer(pd.Index(values.fillna("").astype(str)))
    return (idx + 1).astype(np.int64)


def _vocab(values: pd.Series) -> np.ndarray:
    vals = values.dropna().astype(str)
    return np.array(sorted(v for v in vals.unique() if v), dtype=str)


def _genre_lists(values: pd.Series) -> list[list[str]]:
    """Genres as lists: accepts lists/arrays or ``|``-separated strings."""
    out: list[list[str]] = []
    for g in values:
        if isinstance(g, str):
            out.append([x for x in g.split("|") if x])
        elif g is None or (isinstance(g, float) and np.isnan(g)):
            out.append([])
        else:
            out.append([str(x) for x in g if str(x)])
    return out


def _by_id(frame: pd.DataFrame | None, id_col: str, ids: pd.Index) -> pd.DataFrame | None:
    """``frame`` aligned to ``ids`` (missing ids become all-NA rows)."""
    if frame is None:
        return None
    f = frame.set_index(id_col) if id_col in frame.columns else frame
    f = f[~f.index.astype(str).duplicated()]
    f.index = f.index.astype(str)
    return f.reindex(ids.astype(str))


@dataclass(frozen=True)
class FeatureEncoder:
    """Vocabularies that turn feature frames into the integer / multi-hot tensors the towers read.

    Learned at ``fit`` from the training frames and saved with the model, so a cold user's
    features are encoded exactly like the training users'.
    """

    genders: np.ndarray
    occupations: np.ndarray
    genres: np.ndarray

    @classmethod
    def fit(
        cls, user_features: pd.DataFrame | None, item_features: pd.DataFrame | None
    ) -> FeatureEncoder:
        """Collect the vocabularies present in the feature frames."""
        empty = np.array([], dtype=str)
        uf = user_features if user_features is not None else pd.DataFrame()
        itf = item_features if item_features is not None else pd.DataFrame()
        genders = _vocab(uf["gender"]) if "gender" in uf.columns else empty
        occupations = _vocab(uf["occupation"]) if "occupation" in uf.columns else empty
        if "genres" in itf.columns:
            genres = np.array(sorted({g for gs in _genre_lists(itf["genres"]) for g in gs}), str)
        else:
            genres = empty
        return cls(genders, occupations, genres)

    def users(self, frame: pd.DataFrame | None, n: int) -> dict[str, np.ndarray]:
        """``age``, ``gender``, ``occupation`` codes (length ``n``) for rows of ``frame``."""
        zeros = np.zeros(n, dtype=np.int64)
        if frame is None:
            return {"age": zeros, "gender": zeros.copy(), "occupation": zeros.copy()}
        cols = frame.columns
        return {
            "age": _bucket(frame["age"], AGE_EDGES) if "age" in cols else zeros,
            "gender": _codes(frame["gender"], self.genders) if "gender" in cols else zeros.copy(),
            "occupation": _codes(frame["occupation"], self.occupations)
            if "occupation" in cols
            else zeros.copy(),
        }

    def items(self, frame: pd.DataFrame | None, n: int) -> dict[str, np.ndarray]:
        """``year`` codes and ``genres`` (``n x n_genres`` float32, rows sum to 1 or 0)."""
        year = np.zeros(n, dtype=np.int64)
        genres = np.zeros((n, len(self.genres)), dtype=np.float32)
        if frame is None:
            return {"year": year, "genres": genres}
        if "year" in frame.columns:
            year = _bucket(frame["year"], YEAR_EDGES)
        if "genres" in frame.columns and len(self.genres):
            lists = _genre_lists(frame["genres"])
            rows = np.repeat(np.arange(n), [len(g) for g in lists])
            cols = pd.Index(self.genres).get_indexer(pd.Index([g for gs in lists for g in gs]))
            ok = cols >= 0
            genres[rows[ok], cols[ok]] = 1.0
            # Mean, not sum, of genre embeddings: a movie with five genres is not five times louder.
            totals = genres.sum(axis=1, keepdims=True)
            np.divide(genres, totals, out=genres, where=totals > 0)
        return {"year": year, "genres": genres}

    def state(self) -> dict[str, np.ndarray]:
        return {
            "vocab_gender": self.genders,
            "vocab_occupation": self.occupations,
            "vocab_genres": self.genres,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> FeatureEncoder:
        return cls(
            np.asarray(state["vocab_gender"], dtype=str),
            np.asarray(state["vocab_occupation"], dtype=str),
            np.asarray(state["vocab_genres"], dtype=str),
        )


@dataclass(frozen=True)
class TowerDims:
    """Sizes that fix the net's shapes (saved with the model to rebuild it)."""

    n_users: int
    n_items: int
    n_age: int
    n_gender: int
    n_occupation: int
    n_genres: int
    n_year: int
    embedding_dim: int
    hidden: int

    def to_array(self) -> np.ndarray:
        return np.array([getattr(self, k) for k in _DIM_NAMES], dtype=np.int64)

    @classmethod
    def from_array(cls, arr: np.ndarray) -> TowerDims:
        return cls(**{k: int(v) for k, v in zip(_DIM_NAMES, arr, strict=True)})


# ---- the net, the task, the serving index ----------------------------------------------------
def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class TwoTowerNet(nn.Module):
    """User and item towers with L2-normalised outputs (cosine similarity = dot product).

    Ids passed in are already shifted: ``0`` is the cold slot, ``idx + 1`` a known id. Feature
    codes are 1-based with ``0`` meaning unknown.
    """

    def __init__(self, dims: TowerDims) -> None:
        super().__init__()
        self.dims = dims
        d = dims.embedding_dim
        f = max(4, d // 4)  # side features carry far fewer bits than an id
        self.user_id = nn.Embedding(dims.n_users + 1, d)
        self.age = nn.Embedding(dims.n_age + 1, f)
        self.gender = nn.Embedding(dims.n_gender + 1, f)
        self.occupation = nn.Embedding(dims.n_occupation + 1, f)
        self.user_mlp = _mlp(d + 3 * f, dims.hidden, d)
        self.item_id = nn.Embedding(dims.n_items + 1, d)
        self.year = nn.Embedding(dims.n_year + 1, f)
        self.genres = nn.Linear(dims.n_genres, f, bias=False) if dims.n_genres else None
        self.item_mlp = _mlp(d + 2 * f, dims.hidden, d)
        for emb in (self.user_id, self.item_id):
            nn.init.normal_(emb.weight, std=0.1)

    def user_embedding(
        self, user: torch.Tensor, age: torch.Tensor, gender: torch.Tensor, occupation: torch.Tensor
    ) -> torch.Tensor:
        """``B x d`` unit vectors for shifted user ids and their feature codes."""
        x = torch.cat(
            [self.user_id(user), self.age(age), self.gender(gender), self.occupation(occupation)],
            dim=1,
        )
        return F.normalize(self.user_mlp(x), dim=1)

    def item_embedding(
        self, item: torch.Tensor, genres: torch.Tensor, year: torch.Tensor
    ) -> torch.Tensor:
        """``B x d`` unit vectors for shifted item ids, multi-hot genres and year codes."""
        parts = [self.item_id(item), self.year(year)]
        if self.genres is not None:
            parts.append(self.genres(genres))
        else:  # keep the MLP's input width fixed whether or not the catalogue has genres
            parts.append(torch.zeros(item.shape[0], self.year.embedding_dim, dtype=parts[0].dtype))
        return F.normalize(self.item_mlp(torch.cat(parts, dim=1)), dim=1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors, item vectors) for a batch of ``_BATCH_KEYS`` tensors."""
        u = self.user_embedding(batch["user"], batch["age"], batch["gender"], batch["occupation"])
        v = self.item_embedding(batch["item"], batch["genres"], batch["year"])
        return u, v


class TwoTowerTask(nn.Module):
    """The net plus its loss: in-batch sampled softmax with log-Q correction.

    For a batch of ``B`` positive (user, item) pairs the logits are
    ``cos(u_r, v_c) / temperature - log q(item_c)``; the target of row ``r`` is column ``r``.
    Columns holding the same item as row ``r``'s positive (accidental hits) are masked, so an
    item is never pushed away from a user who interacted with it.
    """

    def __init__(
        self,
        net: TwoTowerNet,
        temperature: float,
        id_dropout: float = 0.0,
        logq_correction: bool = True,
    ) -> None:
        super().__init__()
        self.net = net
        self.temperature = temperature
        self.id_dropout = id_dropout
        self.logq_correction = logq_correction

    def _drop_ids(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.training or self.id_dropout <= 0:
            return ids
        keep = torch.rand(ids.shape) >= self.id_dropout
        return torch.where(keep, ids, torch.zeros_like(ids))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean (weighted) softmax cross-entropy of the batch."""
        b = dict(batch)
        b["user"] = self._drop_ids(b["user"])
        b["item"] = self._drop_ids(b["item"])
        u, v = self.net(b)
        logits = (u @ v.T) / self.temperature
        if self.logq_correction:
            logits = logits - b["logq"][None, :]
        items = batch["item"]  # the true ids, not the dropped ones
        hits = items[:, None] == items[None, :]
        hits.fill_diagonal_(False)
        logits = logits.masked_fill(hits, torch.finfo(logits.dtype).min)
        target = torch.arange(len(items))
        losses = F.cross_entropy(logits, target, reduction="none")
        w = b["weight"]
        return (losses * w).sum() / w.sum().clamp_min(1e-12)


@dataclass(frozen=True)
class TowerInputs:
    """Per-user and per-item tower inputs (feature codes), aligned with the interaction indices."""

    user_age: np.ndarray
    user_gender: np.ndarray
    user_occupation: np.ndarray
    item_year: np.ndarray
    item_genres: np.ndarray

    @classmethod
    def build(cls, inter: Interactions, encoder: FeatureEncoder) -> TowerInputs:
        uf = _by_id(inter.user_features, "user_id", inter.user_ids)
        itf = _by_id(inter.item_features, "item_id", inter.item_ids)
        us = encoder.users(uf, inter.n_users)
        its = encoder.items(itf, inter.n_items)
        return cls(us["age"], us["gender"], us["occupation"], its["year"], its["genres"])


@dataclass(frozen=True)
class TwoTowerIndex:
    """Serving form: precomputed unit vectors; a user's scores are ``U[u] @ Vᵀ``.

    Users and items without any training interaction get the cold-slot id (their untrained id
    embedding would be noise), so they are embedded from their features alone.
    """

    user_embeddings: np.ndarray
    item_embeddings: np.ndarray

    @classmethod
    @torch.no_grad()
    def from_net(
        cls,
        net: TwoTowerNet,
        inputs: TowerInputs,
        user_has_history: np.ndarray,
        item_has_history: np.ndarray,
        batch_size: int = 65_536,
    ) -> TwoTowerIndex:
        """Run both towers over every user and item once (in eval mode; the mode is restored)."""
        was_training = net.training
        net.eval()
        n_users, n_items = len(user_has_history), len(item_has_history)
        uid = np.where(user_has_history, np.arange(n_users) + 1, 0)
        iid = np.where(item_has_history, np.arange(n_items) + 1, 0)
        users = [
            net.user_embedding(
                torch.from_numpy(uid[s : s + batch_size]),
                torch.from_numpy(inputs.user_age[s : s + batch_size]),
                torch.from_numpy(inputs.user_gender[s : s + batch_size]),
                torch.from_numpy(inputs.user_occupation[s : s + batch_size]),
            ).numpy()
            for s in range(0, n_users, batch_size)
        ]
        items = [
            net.item_embedding(
                torch.from_numpy(iid[s : s + batch_size]),
                torch.from_numpy(inputs.item_genres[s : s + batch_size]),
                torch.from_numpy(inputs.item_year[s : s + batch_size]),
            ).numpy()
            for s in range(0, n_items, batch_size)
        ]
        d = net.dims.embedding_dim
        net.train(was_training)
        return cls(
            np.concatenate(users) if users else np.zeros((0, d), np.float32),
            np.concatenate(items) if items else np.zeros((0, d), np.float32),
        )

    def scores(self, user_idx: np.ndarray) -> np.ndarray:
        """``len(user_idx) x n_items`` float32 cosine similarities."""
        return self.user_embeddings[np.asarray(user_idx, dtype=np.int64)] @ self.item_embeddings.T


# ---- training ------------------------------------------------------------------------------
def _training_columns(
    inter: Interactions, inputs: TowerInputs, feedback: Feedback
) -> dict[str, np.ndarray]:
    """One row per interaction with everything both towers and the loss need."""
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


def _net_state(net: TwoTowerNet) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def _load_net_state(net: TwoTowerNet, arrays: Mapping[str, np.ndarray]) -> None:
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})


def _blank_net(dims: TowerDims) -> TwoTowerNet:
    """A net whose weights are about to be overwritten; built under a forked RNG so that
    loading a model never shifts the caller's torch random stream."""
    with torch.random.fork_rng(devices=[]):
        return TwoTowerNet(dims)


def _make_task(dims: TowerDims, cfg: Mapping[str, Any]) -> TwoTowerTask:
    return TwoTowerTask(
        TwoTowerNet(dims), cfg["temperature"], cfg["id_dropout"], cfg["logq_correction"]
    )


def _optimizer(task: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(task.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def _step(task: nn.Module, opt: torch.optim.Optimizer, batch: Mapping[str, torch.Tensor]) -> float:
    """One optimisation step; shared by the in-process loop and the Ray Train workers."""
    opt.zero_grad(set_to_none=True)
    loss = task(batch)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _numpy_batches(
    columns: Mapping[str, np.ndarray], batch_size: int, rng: np.random.Generator
) -> Iterator[dict[str, torch.Tensor]]:
    n = len(columns["user"])
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        sel = order[start : start + batch_size]
        if len(sel) < 2:  # a softmax over one candidate teaches nothing
            continue
        yield {k: torch.from_numpy(columns[k][sel]) for k in _BATCH_KEYS}


EpochHook = Callable[[int, TwoTowerNet, dict[str, float]], None]


def train_in_process(
    columns: Mapping[str, np.ndarray],
    dims: TowerDims,
    cfg: Mapping[str, Any],
    on_epoch: EpochHook | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Train without Ray (``num_workers = 0``); returns (net weights, last epoch's metrics).

    ``on_epoch(epoch, net, metrics)`` runs after every epoch (Ray Tune reports from it so that
    ASHA can stop a poor trial early); it must leave the net's weights alone.

    Runs under a forked torch RNG so that seeding does not disturb the caller's global state,
    with one torch thread (restored afterwards).
    """
    rng = np.random.default_rng(cfg["seed"])
    threads = torch.get_num_threads()
    # One intra-op thread: at these batch sizes thread synchronisation costs more than the
    # matmuls, and on a busy 2-core machine spinning threads turned a 0.3 s fit into 20 s.
    torch.set_num_threads(1)
    try:
        return _train_in_process(columns, dims, cfg, rng, on_epoch)
    finally:
        torch.set_num_threads(threads)


def _train_in_process(
    columns: Mapping[str, np.ndarray],
    dims: TowerDims,
    cfg: Mapping[str, Any],
    rng: np.random.Generator,
    on_epoch: EpochHook | None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    metrics: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        task = _make_task(dims, cfg)
        opt = _optimizer(task, cfg)
        task.train()
        for epoch in range(cfg["epochs"]):
            start, total, n, steps = time.perf_counter(), 0.0, 0, 0
            for batch in _numpy_batches(columns, cfg["batch_size"], rng):
                total += _step(task, opt, batch)
                n += len(batch["user"])
                steps += 1
            secs = time.perf_counter() - start
            metrics = {
                "epoch": float(epoch + 1),
                "loss": total / max(steps, 1),
                "samples_per_s": n / secs if secs > 0 else float("nan"),
            }
            if on_epoch is not None:
                on_epoch(epoch + 1, task.net, metrics)
                task.train()
    return _net_state(task.net), metrics


def _train_worker(config: dict[str, Any]) -> None:
    """Ray Train ``train_loop_per_worker``: DDP over the ``train`` Ray Data shard.

    Reports loss and global samples/s every epoch; rank 0 attaches a checkpoint holding the net
    weights as ``weights.npz`` (never pickled). Resumes from the latest checkpoint if Ray Train
    restarts the run after a worker failure.
    """
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(int(config["seed"]) + rank)
    dims = TowerDims(**config["dims"])
    task = _make_task(dims, config)
    first_epoch = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            with np.load(Path(d) / "weights.npz", allow_pickle=False) as z:
                _load_net_state(task.net, {k: z[k] for k in z.files})
            first_epoch = int(json.loads((Path(d) / "progress.json").read_text())["epoch"])
    model = ray.train.torch.prepare_model(task)
    opt = _optimizer(model, config)
    shard = ray.train.get_dataset_shard("train")
    model.train()
    for epoch in range(first_epoch, int(config["epochs"])):
        start, total, n, steps = time.perf_counter(), 0.0, 0, 0
        for batch in shard.iter_torch_batches(
            batch_size=int(config["batch_size"]),
            local_shuffle_buffer_size=int(config["shuffle_buffer"]) or None,
            local_shuffle_seed=int(config["seed"]) + 1000 * epoch + rank
            if config["shuffle_buffer"]
            else None,
        ):
            if len(batch["user"]) < 2:
                continue
            total += _step(model, opt, batch)
            n += len(batch["user"])
            steps += 1
        secs = time.perf_counter() - start
        if world > 1 and dist.is_initialized():
            # Throughput is the whole group's: sum samples, take the slowest worker's time.
            t = torch.tensor([float(n), total, float(steps)], dtype=torch.float64)
            dist.all_reduce(t)
            s = torch.tensor([secs], dtype=torch.float64)
            dist.all_reduce(s, op=dist.ReduceOp.MAX)
            n_all, loss_sum, steps_all, secs = float(t[0]), float(t[1]), float(t[2]), float(s[0])
        else:
            n_all, loss_sum, steps_all = float(n), total, float(steps)
        metrics = {
            "epoch": epoch + 1,
            "loss": loss_sum / max(steps_all, 1.0),
            "samples_per_s": n_all / secs if secs > 0 else float("nan"),
            "samples": n_all,
        }
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                # DDP wraps the task but shares its parameters: task.net is the live net.
                weights: dict[str, Any] = _net_state(task.net)
                np.savez(Path(tmp) / "weights.npz", **weights)
                (Path(tmp) / "progress.json").write_text(json.dumps({"epoch": epoch + 1}))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)


def train_with_ray(
    columns: Mapping[str, np.ndarray],
    dims: TowerDims,
    cfg: Mapping[str, Any],
    storage_path: str,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Train with ``TorchTrainer`` over a Ray Data dataset of the training columns.

    Returns the final checkpoint's net weights and the last reported metrics.
    """
    import pyarrow as pa
    import ray
    import ray.train
    from ray.data.extensions import ArrowTensorArray
    from ray.train.torch import TorchTrainer

    table = pa.table(
        {
            k: ArrowTensorArray.from_numpy(columns[k]) if columns[k].ndim > 1 else columns[k]
            for k in _BATCH_KEYS
        }
    )
    # Several blocks per worker so the streaming split can balance them; slicing the table
    # here (zero-copy) avoids a repartition, which would need its own Ray tasks and CPUs.
    n_blocks = max(1, min(64, table.num_rows // 50_000)) * max(1, int(cfg["num_workers"]))
    step = -(-table.num_rows // n_blocks)
    ds = ray.data.from_arrow([table.slice(s, step) for s in range(0, table.num_rows, step)])
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={**cfg, "dims": asdict(dims)},
        scaling_config=ray.train.ScalingConfig(
            num_workers=int(cfg["num_workers"]), use_gpu=bool(cfg["use_gpu"])
        ),
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
    return weights, metrics


def _is_number(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


# ---- the recommender -----------------------------------------------------------------------
class TwoTower(Recommender[TwoTowerConfig]):
    """Two-tower retrieval: score = cosine(user vector, item vector).

    Every known user can be scored: one with no training interactions is embedded from its
    features through the cold slot (or, without features, gets the learnt "average user", which
    is a popularity-like prior). Unknown ids go through :meth:`recommend_cold` with features.
    """

    name = "two_tower"
    config_class = TwoTowerConfig

    def __init__(self, config: TwoTowerConfig | None = None) -> None:
        super().__init__(config)
        self.index_: TwoTowerIndex | None = None
        self.net_: TwoTowerNet | None = None
        self.encoder_: FeatureEncoder | None = None
        self.train_metrics_: dict[str, float] = {}

    def fit(
        self,
        interactions: Interactions,
        *,
        epoch_callback: Callable[[int, dict[str, float], TwoTower], None] | None = None,
    ) -> Self:
        """Train the towers (in-process or on Ray Train), then precompute the serving index.

        ``epoch_callback(epoch, metrics, model)`` is called after every epoch with this model
        already usable (``recommend``, ``rank_items``) at that epoch's weights; Ray Tune uses
        it to report a validation metric per epoch. It needs ``num_workers = 0``.
        """
        cfg = self.config
        if epoch_callback is not None and cfg.num_workers != 0:
            raise ValueError(
                "epoch_callback needs the in-process loop: set num_workers: 0 in the "
                f"two_tower config (got num_workers={cfg.num_workers})"
            )
        encoder = FeatureEncoder.fit(interactions.user_features, interactions.item_features)
        inputs = TowerInputs.build(interactions, encoder)
        dims = TowerDims(
            n_users=interactions.n_users,
            n_items=interactions.n_items,
            n_age=len(AGE_EDGES) + 1,
            n_gender=len(encoder.genders),
            n_occupation=len(encoder.occupations),
            n_genres=len(encoder.genres),
            n_year=len(YEAR_EDGES) + 1,
            embedding_dim=cfg.embedding_dim,
            hidden=cfg.hidden,
        )
        columns = _training_columns(interactions, inputs, cfg.feedback)
        if len(columns["user"]) < 2:
            raise ValueError(
                f"two_tower needs at least 2 interactions to train, got {len(columns['user'])}"
            )
        hp = cfg.model_dump()
        x = interactions.matrix.tocsr()
        user_has_history = np.diff(x.indptr) > 0
        item_has_history = np.bincount(x.indices, minlength=interactions.n_items) > 0
        hook: EpochHook | None = None
        if epoch_callback is not None:

            def hook(epoch: int, net: TwoTowerNet, metrics: dict[str, float]) -> None:
                self.index_ = TwoTowerIndex.from_net(
                    net, inputs, user_has_history, item_has_history
                )
                self.net_, self.encoder_ = net, encoder
                self.interactions_ = interactions
                epoch_callback(epoch, metrics, self)

        if cfg.num_workers == 0:
            weights, metrics = train_in_process(columns, dims, hp, hook)
        elif cfg.storage_path is not None:
            weights, metrics = train_with_ray(columns, dims, hp, cfg.storage_path)
        else:
            with tempfile.TemporaryDirectory(prefix="two_tower-") as tmp:
                weights, metrics = train_with_ray(columns, dims, hp, tmp)
        net = _blank_net(dims)
        _load_net_state(net, weights)
        net.eval()
        self.index_ = TwoTowerIndex.from_net(net, inputs, user_has_history, item_has_history)
        self.net_, self.encoder_ = net, encoder
        self.train_metrics_ = metrics
        self.interactions_ = interactions
        return self

    def _index(self) -> TwoTowerIndex:
        self._require_fitted()
        assert self.index_ is not None
        return self.index_

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """User vectors @ item vectorsᵀ."""
        return self._index().scores(user_idx)

    def user_vectors_from_features(self, user_features: pd.DataFrame) -> np.ndarray:
        """Unit vectors for users described only by features (``age``, ``gender``,
        ``occupation``; any may be missing), through the cold id slot."""
        self._require_fitted()
        assert self.net_ is not None and self.encoder_ is not None
        codes = self.encoder_.users(user_features.reset_index(drop=True), len(user_features))
        with torch.no_grad():
            self.net_.eval()
            out = self.net_.user_embedding(
                torch.zeros(len(user_features), dtype=torch.int64),
                torch.from_numpy(codes["age"]),
                torch.from_numpy(codes["gender"]),
                torch.from_numpy(codes["occupation"]),
            )
        return out.numpy()

    def recommend_cold(
        self, user_features: pd.DataFrame, k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-``k`` for users known only by their features (new sign-ups, unknown ids).

        ``user_features`` has one row per user: optional ``user_id`` (default: the row
        position), ``age``, ``gender``, ``occupation``. If a ``user_id`` is one this model was
        trained on and ``exclude_seen``, that user's seen items are still excluded. Every row
        comes back ``known=True``.
        """
        if k <= 0:
            raise ValueError(f"k must be a positive integer, got {k}")
        inter = self._require_fitted()
        frame = user_features.reset_index(drop=True)
        ids = (
            frame["user_id"].astype(str).tolist()
            if "user_id" in frame.columns
            else [str(i) for i in range(len(frame))]
        )
        scores = self.user_vectors_from_features(frame) @ self._index().item_embeddings.T
        scores = scores.astype(np.float64)
        if exclude_seen:
            uidx = inter.user_ids.get_indexer(pd.Index(ids))
            for row in np.flatnonzero(uidx >= 0):
                seen = inter.matrix[uidx[row]].indices
                scores[row, seen] = -np.inf
        kk = min(k, inter.n_items)
        top = top_k_indices(scores, kk)
        vals = np.take_along_axis(scores, top, axis=1)
        names = inter.item_ids.to_numpy()
        items: list[list[str]] = []
        out_scores: list[list[float]] = []
        for t, v in zip(top, vals, strict=True):
            ok = np.isfinite(v)
            items.append(names[t[ok]].tolist())
            out_scores.append(v[ok].tolist())
        return Recommendations(ids, items, out_scores, [True] * len(ids))

    def _state(self) -> dict[str, Any]:
        index = self._index()
        assert self.net_ is not None and self.encoder_ is not None
        state: dict[str, Any] = {
            "user_embeddings": index.user_embeddings,
            "item_embeddings": index.item_embeddings,
            "dims": self.net_.dims.to_array(),
            **self.encoder_.state(),
        }
        state.update({f"net.{k}": v for k, v in _net_state(self.net_).items()})
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.index_ = TwoTowerIndex(
            np.asarray(state["user_embeddings"], dtype=np.float32),
            np.asarray(state["item_embeddings"], dtype=np.float32),
        )
        self.encoder_ = FeatureEncoder.from_state(state)
        net = _blank_net(TowerDims.from_array(state["dims"]))
        _load_net_state(net, {k[4:]: v for k, v in state.items() if k.startswith("net.")})
        net.eval()
        self.net_ = net


def interactions_with_features(
    frame: pd.DataFrame,
    movies: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    item_ids: Iterable[str] | None = None,
) -> Interactions:
    """Binary interactions from a ratings frame with MovieLens-style feature frames attached."""
    return Interactions.from_frame(
        frame,
        weight_col=None,
        item_ids=list(item_ids) if item_ids is not None else None,
        item_features=movies,
        user_features=users,
    )


__all__ = [
    "FeatureEncoder",
    "TowerDims",
    "TowerInputs",
    "TwoTower",
    "TwoTowerConfig",
    "TwoTowerIndex",
    "TwoTowerNet",
    "TwoTowerTask",
    "interactions_with_features",
    "train_in_process",
    "train_with_ray",
]
