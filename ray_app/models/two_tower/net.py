"""The two towers (:class:`TwoTowerNet`), their training objective (:class:`TwoTowerTask`) and
their serving form (:class:`TwoTowerIndex`), as in torchrec's ``examples/retrieval``.

User tower: user-id embedding + age bucket, gender and occupation embeddings → MLP →
L2-normalised vector. Item tower: item-id embedding + genres (multi-hot, mean of genre
embeddings) + release-year bucket → MLP → L2-normalised vector. Id 0 in both id tables is the
"cold" slot: ids are shifted by one, and during training a fraction (``id_dropout``) of ids is
replaced by 0 so that the towers learn to answer from features alone. That is what scores a new
user from demographics and a new item from content.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ray_app.models.two_tower.features import AGE_EDGES, YEAR_EDGES, FeatureEncoder, TowerInputs

BATCH_KEYS = ("user", "item", "age", "gender", "occupation", "year", "genres", "logq", "weight")
"""The columns of one training batch (see :func:`~ray_app.models.two_tower.training.columns`)."""


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

    @classmethod
    def for_data(
        cls, n_users: int, n_items: int, encoder: FeatureEncoder, embedding_dim: int, hidden: int
    ) -> TowerDims:
        """The shapes for ``n_users`` x ``n_items`` with ``encoder``'s vocabularies."""
        return cls(
            n_users=n_users,
            n_items=n_items,
            n_age=len(AGE_EDGES) + 1,
            n_gender=len(encoder.genders),
            n_occupation=len(encoder.occupations),
            n_genres=len(encoder.genres),
            n_year=len(YEAR_EDGES) + 1,
            embedding_dim=embedding_dim,
            hidden=hidden,
        )

    def to_array(self) -> np.ndarray:
        """The sizes as an int64 array, in field order (for ``state.npz``)."""
        return np.array(astuple(self), dtype=np.int64)

    @classmethod
    def from_array(cls, arr: np.ndarray) -> TowerDims:
        """Inverse of :meth:`to_array`."""
        names = [f.name for f in fields(cls)]
        return cls(**{k: int(v) for k, v in zip(names, arr, strict=True)})


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
        """(user vectors, item vectors) for a batch of :data:`BATCH_KEYS` tensors."""
        u = self.user_embedding(batch["user"], batch["age"], batch["gender"], batch["occupation"])
        v = self.item_embedding(batch["item"], batch["genres"], batch["year"])
        return u, v

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The weights as numpy arrays (what checkpoints and ``state.npz`` hold; no pickle)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Inverse of :meth:`state_arrays`."""
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})

    @classmethod
    def from_state_arrays(cls, dims: TowerDims, arrays: Mapping[str, np.ndarray]) -> TwoTowerNet:
        """A net in eval mode holding ``arrays``. Built under a forked RNG so that loading
        weights never shifts the caller's torch random stream."""
        with torch.random.fork_rng(devices=[]):
            net = cls(dims)
        net.load_state_arrays(arrays)
        return net.eval()


class TwoTowerTask(nn.Module):
    """The net plus its loss: in-batch sampled softmax with log-Q correction.

    For a batch of ``B`` positive (user, item) pairs the logits are
    ``cos(u_r, v_c) / temperature - log q(item_c)``, where ``q`` is the item's sampling
    frequency (how often it appears as an in-batch negative); the target of row ``r`` is column
    ``r``. Columns holding the same item as row ``r``'s positive (accidental hits) are masked,
    so an item is never pushed away from a user who interacted with it.
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
