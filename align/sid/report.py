"""How good a set of Semantic IDs is, in numbers (written to <run>/sid/report.json).

Per level: how many codes are used and how evenly (perplexity = exp(entropy); equal to the codebook size when
every code holds as many items). Collisions before they are resolved. Reconstruction error when codebooks exist.
Semantic coherence: items sharing a first-level code should be more alike than random pairs.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch

from align.sid.collisions import collision_stats

CHUNK = 65536


def sid_report(
    codes: torch.Tensor | np.ndarray,
    level_sizes: Sequence[int],
    embeddings: torch.Tensor | np.ndarray | None = None,
    codebooks: Sequence[torch.Tensor] | None = None,
    level_errors: Sequence[float] | None = None,
) -> dict:
    """Statistics of (N, L) codes whose level l takes values in [0, level_sizes[l]).

    Args:
        codes: (N, L) int codes, before collisions are resolved.
        level_sizes: codebook size per level.
        embeddings: (N, D) item embeddings, for coherence (and reconstruction with codebooks).
        codebooks: per level (K_l, D) centroids; the reconstruction sums the first len(codebooks) levels.
        level_errors: the quantizer's own mean |x - x_hat|^2 after levels 0..l (e.g. RQResult.level_errors, the
            only way for RQ-VAE, whose codebooks live in a latent space); used instead of `codebooks`.

    Returns:
        A JSON-ready dict: items, levels (one dict per level), collisions, and when computable reconstruction_mse
        (mean over items of |x - x_hat|^2, and per level with level_errors) and coherence (mean cosine of
        same-first-code pairs vs all pairs; same_prefix[l]: of pairs sharing codes 0..l).
    """
    codes = torch.as_tensor(codes, dtype=torch.int64)
    if codes.ndim != 2 or len(level_sizes) != codes.shape[1]:
        raise ValueError(f"codes of shape {tuple(codes.shape)} do not match level_sizes {list(level_sizes)}")
    for level, size in enumerate(level_sizes):
        if codes.shape[0] and not 0 <= int(codes[:, level].min()) <= int(codes[:, level].max()) < size:
            raise ValueError(f"level {level} has codes outside [0, {size})")
    report: dict = {
        "items": int(codes.shape[0]),
        "levels": [_level_stats(codes[:, level], size) | {"level": level} for level, size in enumerate(level_sizes)],
        "collisions": collision_stats(codes),
    }
    if embeddings is not None:
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32)
        if embeddings.shape[0] != codes.shape[0]:
            raise ValueError(f"{embeddings.shape[0]} embeddings for {codes.shape[0]} coded items")
        if level_errors is not None:
            report["reconstruction_mse"] = float(level_errors[-1])
            report["reconstruction_mse_per_level"] = [float(error) for error in level_errors]
            report["embedding_mean_sq_norm"] = float(embeddings.double().square().sum(1).mean())
        elif codebooks is not None:
            report["reconstruction_mse"] = reconstruction_mse(embeddings, codes, codebooks)
        report["coherence"] = coherence(embeddings, codes[:, 0])
        report["coherence"]["same_prefix"] = [
            coherence(embeddings, torch.unique(codes[:, :length], dim=0, return_inverse=True)[1])["same_first_code"]
            for length in range(1, codes.shape[1] + 1)
        ]
    return report


def _level_stats(level_codes: torch.Tensor, size: int) -> dict:
    counts = torch.bincount(level_codes, minlength=size)
    used = int((counts > 0).sum())
    n = level_codes.numel()
    p = counts[counts > 0].double() / max(n, 1)
    return {
        "size": int(size),
        "used": used,
        "utilisation": used / size,
        "perplexity": math.exp(float(-(p * p.log()).sum())) if n else 0.0,
        "largest_cluster": int(counts.max()) if n else 0,
        "mean_cluster": n / used if used else 0.0,
    }


def reconstruction_mse(embeddings: torch.Tensor, codes: torch.Tensor, codebooks: Sequence[torch.Tensor]) -> float:
    """Mean over items of |x - sum_l codebooks[l][codes[:, l]]|^2."""
    total = 0.0
    for start in range(0, embeddings.shape[0], CHUNK):
        residual = embeddings[start : start + CHUNK].clone()
        for level, codebook in enumerate(codebooks):
            residual -= torch.as_tensor(codebook, dtype=torch.float32)[codes[start : start + CHUNK, level]]
        total += float(residual.double().square().sum())
    return total / max(embeddings.shape[0], 1)


def coherence(embeddings: torch.Tensor, groups: torch.Tensor) -> dict:
    """Mean cosine similarity over all pairs of distinct items in the same group, and over all pairs.

    Exact, without sampling: the cosines of all pairs inside a set of unit vectors sum to (|sum e|^2 - sum |e|^2) / 2.
    A value is None when there is no such pair.
    """
    unit = torch.nn.functional.normalize(embeddings.double(), dim=1)
    self_sims = unit.square().sum(1)  # 1, or 0 for a zero vector
    group_sums = torch.zeros(int(groups.max()) + 1 if groups.numel() else 0, unit.shape[1], dtype=torch.float64)
    group_sums.index_add_(0, groups, unit)
    sizes = torch.bincount(groups).double()
    same_pairs = float((sizes * (sizes - 1)).sum())
    same_sum = float(group_sums.square().sum() - self_sims.sum())
    n = unit.shape[0]
    all_sum = float(unit.sum(0).square().sum() - self_sims.sum())
    return {
        "same_first_code": same_sum / same_pairs if same_pairs else None,
        "random_pairs": all_sum / (n * (n - 1)) if n > 1 else None,
    }
