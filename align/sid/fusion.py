"""Behaviour vectors from the training interactions, fused with the text embeddings before quantization.

Items bought by the same users should get nearby SIDs even when their texts differ. The behaviour vector of an
item comes from item co-occurrence: A is the (users x items) matrix with A[u, i] = 1 / sqrt(|items of u|) when user
u interacted with item i in train.jsonl (history or target), so A^T A counts co-occurrences, each user weighted
by one over the length of their history. A truncated SVD A ~ U S V^T gives items the rows of V S (d dims, the best
rank-d fit of A^T A's geometry), L2-normalised. Items no training user touched get a zero behaviour vector.
Only train.jsonl is read: valid/test targets must not shape the SIDs the model is evaluated with.

Fusion concatenates the two parts weighted so the row stays unit length:

    fused = [sqrt(1 - w) * text, sqrt(w) * behaviour]    => cos(fused_i, fused_j) = (1 - w) cos_text + w cos_behaviour

for items with both parts, w = --behaviour_weight in [0, 1]; w = 0 leaves the text embeddings as they are.
"""

import logging
from pathlib import Path

import numpy as np
import torch

from align.run_dir import read_jsonl

logger = logging.getLogger(__name__)


def user_item_matrix(train_path: Path, item_ids: list[str]) -> torch.Tensor:
    """Sparse (users x items) float32 COO matrix of train.jsonl: 1 / sqrt(n_u) at each (user, item) pair, where
    n_u is the number of distinct catalog items of user u (history and target of all their rows)."""
    index = {item: i for i, item in enumerate(item_ids)}
    per_user: dict[str, set[int]] = {}
    unknown = 0
    for row in read_jsonl(train_path):
        items = per_user.setdefault(str(row["user_id"]), set())
        for item in [*row.get("history", []), row["target"]]:
            if str(item) in index:
                items.add(index[str(item)])
            else:
                unknown += 1
    if unknown:
        logger.info("%s: %d interactions name items outside items.jsonl; ignored", train_path, unknown)
    rows, cols, values = [], [], []
    for user, items in enumerate(per_user.values()):
        for item in sorted(items):
            rows.append(user)
            cols.append(item)
            values.append(1.0 / np.sqrt(len(items)))
    if not values:
        raise ValueError(f"{train_path} has no interaction with a catalog item: set --behaviour_weight 0")
    return torch.sparse_coo_tensor(
        torch.tensor([rows, cols]),
        torch.tensor(values, dtype=torch.float32),
        (len(per_user), len(item_ids)),
        check_invariants=True,
    ).coalesce()


def behaviour_vectors(interactions: torch.Tensor, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """(U, N) sparse user-item matrix -> (N, d) L2-normalised item vectors V S of its rank-d truncated SVD.

    d = min(dim, U, N). Items without interactions get zero rows. Deterministic for a seed.
    """
    n_users, n_items = interactions.shape
    rank = min(dim, n_users, n_items)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # svd_lowrank's random projection; a few power iterations make the top singular vectors accurate.
        _, singular, v = torch.svd_lowrank(interactions, q=min(rank + 8, n_users, n_items), niter=4)
    vectors = v[:, :rank] * singular[:rank]
    vectors = _fix_signs(vectors)
    return torch.nn.functional.normalize(vectors, dim=1)  # zero rows stay zero


def _fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Flip each column so its largest-magnitude entry is positive: SVD signs are arbitrary."""
    pivot = vectors.abs().argmax(0)
    signs = torch.sign(vectors[pivot, torch.arange(vectors.shape[1])])
    return vectors * torch.where(signs == 0, 1.0, signs)


def fuse(text: np.ndarray, behaviour: np.ndarray, weight: float) -> np.ndarray:
    """(N, D) unit text rows and (N, d) unit-or-zero behaviour rows -> (N, D + d) float32 [sqrt(1-w) t, sqrt(w) b]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"--behaviour_weight must be in [0, 1], got {weight}")
    if text.shape[0] != behaviour.shape[0]:
        raise ValueError(f"{text.shape[0]} text embeddings but {behaviour.shape[0]} behaviour vectors")
    parts = [np.sqrt(1.0 - weight) * text, np.sqrt(weight) * behaviour]
    return np.concatenate(parts, axis=1).astype(np.float32)


def fuse_behaviour(
    text: np.ndarray, train_path: Path, item_ids: list[str], weight: float, dim: int = 32, seed: int = 0
) -> np.ndarray:
    """Text embeddings (N, D) -> fused (N, D + d) with behaviour vectors from train.jsonl; unchanged when w = 0."""
    if weight == 0:
        return text
    behaviour = behaviour_vectors(user_item_matrix(train_path, item_ids), dim, seed)
    touched = int((behaviour.norm(dim=1) > 0).sum())
    logger.info(
        "behaviour vectors: %d dims from %s; %d of %d items have interactions (the others: text only)",
        behaviour.shape[1],
        train_path,
        touched,
        len(item_ids),
    )
    return fuse(text, behaviour.numpy(), weight)
