"""Top-K recommendation metrics with one relevant item per user (leave-one-out evaluation).

HR@K: share of users whose target is among their first K recommendations.
NDCG@K: mean of 1 / log2(rank + 2) over users, rank the target's 0-based position in the first K (0 if absent);
with one relevant item the ideal DCG is 1, so no normalisation is needed. If a list repeats the target, its first
position counts. Pure Python and numpy, so every figure can be checked by hand.
"""

from collections.abc import Hashable, Sequence

import numpy as np


def target_ranks(ranked: Sequence[Sequence[Hashable]], targets: Sequence[Hashable]) -> np.ndarray:
    """(U,) 0-based position of each user's target in their ranked list, -1 if absent."""
    if len(ranked) != len(targets):
        raise ValueError(f"got {len(ranked)} ranked lists for {len(targets)} targets: pass one list per user")
    if not targets:
        raise ValueError("no users to score: the ranked lists and targets are empty")
    ranks = np.full(len(targets), -1, dtype=np.int64)
    for user, (items, target) in enumerate(zip(ranked, targets, strict=True)):
        for rank, item in enumerate(items):
            if item == target:
                ranks[user] = rank
                break
    return ranks


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _hit_rate(ranks: np.ndarray, k: int) -> float:
    return float(np.mean((ranks >= 0) & (ranks < k)))


def _ndcg(ranks: np.ndarray, k: int) -> float:
    hit = (ranks >= 0) & (ranks < k)
    gains = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2.0), 0.0)
    return float(np.mean(gains))


def hit_rate_at_k(ranked: Sequence[Sequence[Hashable]], targets: Sequence[Hashable], k: int) -> float:
    """Share of users whose target is in their top k, e.g. ranked [[3, 1, 2]], target [1]: k=1 -> 0.0, k=2 -> 1.0."""
    _check_k(k)
    return _hit_rate(target_ranks(ranked, targets), k)


def ndcg_at_k(ranked: Sequence[Sequence[Hashable]], targets: Sequence[Hashable], k: int) -> float:
    """Mean 1 / log2(rank + 2) of the target within the top k, e.g. ranked [[3, 1, 2]], target [1]: 1 / log2(3)."""
    _check_k(k)
    return _ndcg(target_ranks(ranked, targets), k)


def ranking_metrics(
    ranked: Sequence[Sequence[Hashable]], targets: Sequence[Hashable], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """{"hr@1": ..., "ndcg@1": ..., "hr@5": ..., ...} for every k in `ks`, ranks found once."""
    for k in ks:
        _check_k(k)
    ranks = target_ranks(ranked, targets)
    out = {}
    for k in ks:
        out[f"hr@{k}"] = _hit_rate(ranks, k)
        out[f"ndcg@{k}"] = _ndcg(ranks, k)
    return out
