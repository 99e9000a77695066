"""Residual k-means (RQ-KMeans), plain or balanced, in pure torch.

Level l clusters the residual left by levels 0..l-1, so a code sequence (c0, c1, c2) names a coarse-to-fine path
and the sum of the chosen centroids reconstructs the embedding. Each level is fitted on a random sample (k-means++
init, a first assignment under the size cap, then Lloyd iterations) and then assigns every item once, so a million
items cost a few full passes, not `iters` of them. Then `refine_sweeps` sweeps re-fit each level against what the
other levels leave (block coordinate descent), which brings the final error below that of greedy level-by-level RQ.
Distances are computed chunk by chunk as `|c|^2 - 2 x.c` with one matmul per chunk, so memory stays at (chunk, K)
whatever N is.

Balanced mode caps every cluster at ceil(n / K) items, or ceil((1 + t) n / K) with a tolerance t (the spirit of
OneRec's balanced k-means): points propose to their nearest open cluster; an over-subscribed cluster keeps the
proposers that would lose most by going elsewhere (largest margin between their best and second-best open cluster)
up to its capacity and then closes; the rest propose again. Every round is a handful of tensor ops on each point's
list of nearest centroids (computed once) and closes at least one cluster; a few rounds usually do.

Balancing per prefix (levels after the first) applies the cap within each group of items that share their earlier
codes: ceil(n_group / K) per code. Siblings are then spread over the codes of the next level instead of following
each other into the same one, so code sequences rarely collide (none at all once the groups are smaller than K), at
a small cost in reconstruction error. The cost: a code of a deep level may hold more than ceil(N / K) items overall.
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

DEFAULT_CHUNK = 32768  # rows per distance matmul: (32768, 256) float32 is 32 MiB
SAMPLE_PER_CODE = 256  # centroids are fitted on this many points per code (at least 65536), then all are assigned
INIT_PER_CODE = 64  # k-means++ seeds from at most this many points per code
CANDIDATES = 16  # balanced assignment looks up each point's 16 nearest centroids, recomputed only when all are full


@dataclass
class RQResult:
    """A fitted residual quantizer and the codes of the items it was fitted on.

    Attributes:
        codes: (N, L) int64, codes[:, l] in [0, K_l).
        codebooks: per level a (K_l, D) float32 tensor of centroids.
        level_errors: mean over items of |x - x_hat|^2 after levels 0..l, one float per level.
    """

    codes: torch.Tensor
    codebooks: list[torch.Tensor]
    level_errors: list[float]

    @property
    def level_sizes(self) -> list[int]:
        return [int(codebook.shape[0]) for codebook in self.codebooks]

    def reconstruct(self, codes: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) codes (default: the fitted ones) -> (N, D) sum of their centroids."""
        codes = self.codes if codes is None else codes
        return sum(codebook[codes[:, level]] for level, codebook in enumerate(self.codebooks))

    def to_code_space(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) embeddings -> the vectors the codebooks quantize: the embeddings themselves for RQ-KMeans."""
        return x

    @torch.no_grad()
    def last_level_distances(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(M, D) embeddings and their (M, L) codes -> (M, K_last) squared distances of what the earlier levels
        leave (the last-level residual) to every last-level code; collision re-assignment ranks free codes by it."""
        residual = self.to_code_space(x.float()) - sum(
            codebook[codes[:, level]] for level, codebook in enumerate(self.codebooks[:-1])
        )
        return torch.cdist(residual, self.codebooks[-1]).square()


def fit_rq_kmeans(
    x: torch.Tensor,
    levels: int = 3,
    codebook_size: int | Sequence[int] = 256,
    balanced: bool = False,
    iters: int = 20,
    seed: int = 0,
    device: str | torch.device | None = None,
    sample_size: int | None = None,
    refine_sweeps: int = 1,
    balance_per_prefix: bool = False,
    balance_tolerance: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> RQResult:
    """Fit `levels` levels of (balanced) k-means on successive residuals of `x`.

    Args:
        x: (N, D) embeddings; not modified.
        levels: number of code levels L.
        codebook_size: K per level (one int for all, or a list of L ints). A K above N is lowered to N, since more
            codes than items can never be used.
        balanced: cap every cluster at ceil(N / K) items.
        balance_per_prefix: with `balanced`, apply the cap at levels after the first within each group of items
            sharing their earlier codes (ceil(n_group / K)): far fewer collisions, a little more error.
        balance_tolerance: with `balanced`, let a cluster hold up to ceil((1 + t) * N / K) items: a cap that
            bends around natural clusters of unequal size costs less error (t = 0.04 keeps within 1.05 N / K).
        iters: Lloyd iterations per level on the fitting sample (stops early when assignments stop changing).
        seed: seeds sampling and k-means++; equal inputs and seeds give equal codes.
        device: where to compute ("cpu", "cuda"); default: x's device.
        sample_size: points used to fit centroids per level; default max(SAMPLE_PER_CODE * K, 65536).
        refine_sweeps: after the greedy level-by-level fit, this many sweeps that re-fit each level against what
            the other levels leave (block coordinate descent on the final error; each costs one pass per level).
        chunk_size: rows per distance matmul.

    Returns:
        RQResult with codes (N, L) int64 and codebooks on the CPU.
    """
    sizes = _check_inputs(x, levels, codebook_size)
    if balance_tolerance < 0:
        raise ValueError(f"balance_tolerance must be >= 0, got {balance_tolerance}")
    cap = 1.0 + balance_tolerance if balanced else None  # cluster size limit in units of N / K; None: no limit
    device = torch.device(device) if device is not None else x.device
    n = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).to(device)  # one random sample order shared by all levels
    residual = x.to(device=device, dtype=torch.float32, copy=True)
    codes = torch.empty(n, levels, dtype=torch.int64, device=device)
    codebooks: list[torch.Tensor] = []
    mode = " (balanced per prefix)" if balanced and balance_per_prefix else " (balanced)" if balanced else ""
    bar = tqdm(total=levels * (1 + refine_sweeps), desc="rq-kmeans" + mode)
    for level in range(levels):
        k = sizes[level]
        sample = order[: min(n, sample_size or max(SAMPLE_PER_CODE * k, 65536))]
        groups = _prefix_groups(codes[:, :level]) if balance_per_prefix and level else None
        centroids = _fit_centroids(
            residual[sample], k, cap, iters, generator, chunk_size, None if groups is None else groups[sample]
        )
        codes[:, level], centroids = _fit_level(residual, centroids, cap, chunk_size, groups)
        _add_centroids(residual, codes[:, level], centroids, -1, chunk_size)
        codebooks.append(centroids)
        bar.update()
    for _ in range(refine_sweeps):
        # residual holds x - sum of all levels; put level l back, re-fit it on what the others leave, take it out.
        for level in range(levels):
            _add_centroids(residual, codes[:, level], codebooks[level], 1, chunk_size)
            groups = _prefix_groups(codes[:, :level]) if balance_per_prefix and level else None
            codes[:, level], codebooks[level] = _fit_level(residual, codebooks[level], cap, chunk_size, groups)
            _add_centroids(residual, codes[:, level], codebooks[level], -1, chunk_size)
            bar.update()
    bar.close()
    errors = _level_errors(x.to(device=device, dtype=torch.float32), codes, codebooks, chunk_size)
    logger.info("rq-kmeans: K=%s, reconstruction mse per level %s", sizes, [round(e, 4) for e in errors])
    return RQResult(codes=codes.cpu(), codebooks=[codebook.cpu() for codebook in codebooks], level_errors=errors)


def _prefix_groups(prefix: torch.Tensor) -> torch.Tensor:
    """(N, l) codes of the earlier levels -> (N,) id of each item's prefix, in [0, number of distinct prefixes)."""
    return torch.unique(prefix, dim=0, return_inverse=True)[1]


def _fit_level(
    target: torch.Tensor,
    centroids: torch.Tensor,
    cap: float | None,
    chunk_size: int,
    groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign every row of `target` (N, D), then move the centroids to the means of their clusters."""
    codes = _assign(target, centroids, cap, chunk_size, groups)
    return codes, _update_centroids(target, codes, centroids, chunk_size)


def _add_centroids(
    residual: torch.Tensor, codes: torch.Tensor, centroids: torch.Tensor, sign: int, chunk_size: int
) -> None:
    """residual += sign * centroids[codes], in place and chunk by chunk (no (N, D) temporary)."""
    for start in range(0, residual.shape[0], chunk_size):
        residual[start : start + chunk_size].add_(centroids[codes[start : start + chunk_size]], alpha=sign)


def _level_errors(x: torch.Tensor, codes: torch.Tensor, codebooks: list[torch.Tensor], chunk_size: int) -> list[float]:
    """Mean |x - x_hat|^2 over items when x_hat sums the centroids of levels 0..l, for each l."""
    totals = torch.zeros(len(codebooks), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        residual = x[start : start + chunk_size].clone()
        for level, codebook in enumerate(codebooks):
            residual -= codebook[codes[start : start + chunk_size, level]]
            totals[level] += residual.square().sum(dtype=torch.float64)
    return (totals / x.shape[0]).tolist()


def _check_inputs(x: torch.Tensor, levels: int, codebook_size: int | Sequence[int]) -> list[int]:
    """Raise a clear ValueError for unusable input; return K per level, lowered to at most N."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (items, dim) tensor, got shape {tuple(getattr(x, 'shape', ()))}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"embeddings are empty (shape {tuple(x.shape)}): the catalog needs at least one item")
    if not x.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {x.dtype}")
    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()
        raise ValueError(
            f"embeddings row {int(bad[0])} has NaN or inf values ({bad.numel()} rows in all): re-encode those items"
        )
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    sizes = [codebook_size] * levels if isinstance(codebook_size, int) else [int(k) for k in codebook_size]
    if len(sizes) != levels:
        raise ValueError(f"codebook_size lists {len(sizes)} sizes for {levels} levels")
    if min(sizes) < 1:
        raise ValueError(f"codebook_size must be >= 1, got {list(sizes)}")
    n = x.shape[0]
    if max(sizes) > n:
        logger.warning("codebook size %s lowered to %d: a level cannot use more codes than there are items", sizes, n)
    return [min(k, n) for k in sizes]


def _fit_centroids(
    sample: torch.Tensor,
    k: int,
    cap: float | None,
    iters: int,
    generator: torch.Generator,
    chunk_size: int,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """(S, D) sample -> (k, D) centroids: greedy k-means++ seeds, then `iters` Lloyd steps.

    The first step assigns under the size cap even in plain mode. On near-isotropic data (what deep levels see
    once the coarse structure is gone) a centroid that drifts towards the origin is near to everything and Lloyd
    lets it absorb about half the points, a sink that takes some 50 iterations to drain; one capped assignment
    first spreads the points evenly, and plain steps from there end at a lower error (benchmarks/RESULTS.md).
    """
    centroids = _kmeans_plus_plus(sample[: INIT_PER_CODE * k], k, generator)
    previous = None
    for step in range(iters):
        codes = _assign(sample, centroids, (cap or 1.0) if step == 0 else cap, chunk_size, groups)
        if previous is not None and torch.equal(codes, previous):
            break
        centroids = _update_centroids(sample, codes, centroids, chunk_size)
        previous = codes
    return centroids


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (as scikit-learn): of 2 + log k candidates drawn by D^2, keep the one that cuts cost most.

    When all points are already covered (fewer distinct points than k), further seeds repeat existing points.
    """
    n = x.shape[0]
    x_sq = x.square().sum(1)
    candidates_per_step = 2 + int(math.log(k))
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids[0] = x[first]
    closest = _sq_dists(x, x_sq, x[first : first + 1]).squeeze(1)  # (n,) distance to the nearest seed so far
    for i in range(1, k):
        weights = closest.double().cpu()
        if float(weights.sum()) <= 0:
            centroids[i] = x[int(torch.randint(n, (1,), generator=generator))]
            continue
        picks = torch.multinomial(weights, candidates_per_step, replacement=True, generator=generator).to(x.device)
        candidate_dists = torch.minimum(closest[:, None], _sq_dists(x, x_sq, x[picks]))  # (n, candidates)
        best = int(candidate_dists.sum(0).argmin())
        centroids[i] = x[picks[best]]
        closest = candidate_dists[:, best]
    return centroids


def _sq_dists(x: torch.Tensor, x_sq: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(n, D), (n,), (k, D) -> (n, k) squared Euclidean distances, clamped at 0 against rounding."""
    d = torch.addmm(centroids.square().sum(1), x, centroids.T, alpha=-2)
    return d.add_(x_sq[:, None]).clamp_(min=0)


def _assign(
    x: torch.Tensor, centroids: torch.Tensor, cap: float | None, chunk_size: int, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """Nearest centroids (cap None), or balanced ones: at most ceil(cap * n / K) points per centroid, n counted
    within each group if groups are given."""
    if cap is None:
        return nearest(x, centroids, chunk_size)[0]
    k = centroids.shape[0]
    if groups is None:
        return balanced_assign(x, centroids, math.ceil(cap * x.shape[0] / k), chunk_size)
    capacity = torch.ceil(cap * torch.bincount(groups).double() / k).long()
    return balanced_assign(x, centroids, capacity, chunk_size, groups)


def nearest(
    x: torch.Tensor, centroids: torch.Tensor, chunk_size: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D), (K, D) -> nearest centroid (N,) int64 and its squared distance (N,)."""
    bias = centroids.square().sum(1)
    codes = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        chunk = x[start : start + chunk_size]
        partial = torch.addmm(bias, chunk, centroids.T, alpha=-2)  # |c|^2 - 2 x.c: same argmin as |x - c|^2
        values, codes[start : start + chunk_size] = partial.min(dim=1)
        dists[start : start + chunk_size] = (values + chunk.square().sum(1)).clamp_(min=0)
    return codes, dists


def balanced_assign(
    x: torch.Tensor,
    centroids: torch.Tensor,
    capacity: int | torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Assign each of N points to a centroid so that no centroid gets more than `capacity` points (per group).

    Rounds of proposals: each unassigned point proposes to its nearest open centroid; a centroid accepts, up to its
    remaining capacity, the proposers with the largest margin (distance to their second-best open centroid minus
    distance to it), i.e. those that would lose most elsewhere. A centroid that fills up closes.

    Distances are computed once per point for its CANDIDATES nearest centroids; a round only looks them up. A point
    whose candidates have all closed gets a fresh list among the open centroids (the only full recomputation), so a
    round costs O(pending * CANDIDATES), not a (pending, K, D) matmul, however many rounds the cascade takes.
    Beyond a complete list the margin uses the last candidate's distance, a lower bound of the true second best.

    Args:
        x: (N, D) points.
        centroids: (K, D).
        capacity: at most this many points per centroid: an int, or a (G,) tensor with one cap per group.
        groups: (N,) group of each point in [0, G); caps then hold within each group separately (each group has
            its own copy of every centroid). None: one group.

    Returns:
        (N,) int64 codes.
    """
    n, k, device = x.shape[0], centroids.shape[0], x.device
    groups = torch.zeros(n, dtype=torch.int64, device=device) if groups is None else groups
    capacity = torch.as_tensor(capacity, dtype=torch.int64, device=device).reshape(-1)
    n_groups = max(int(groups.max()) + 1 if n else 1, capacity.numel())
    capacity = capacity.expand(n_groups)
    too_small = torch.nonzero(k * capacity < torch.bincount(groups, minlength=n_groups)).flatten()
    if too_small.numel():
        g = int(too_small[0])
        raise ValueError(f"{k} clusters of capacity {int(capacity[g])} cannot hold {int((groups == g).sum())} points")
    m = min(k, CANDIDATES)
    codes = torch.full((n,), -1, dtype=torch.int64, device=device)
    remaining = capacity[:, None].repeat(1, k).flatten()  # (G * K,): slot g * K + c
    cand_code = torch.empty(n, m, dtype=torch.int64, device=device)
    cand_dist = torch.empty(n, m, dtype=x.dtype, device=device)
    pending = torch.arange(n, device=device)
    stale = pending  # points whose candidate list must be (re)computed
    while pending.numel():
        closed = remaining <= 0
        if stale.numel():
            found = _nearest_open(x, stale, groups[stale], centroids, closed, m, chunk_size)
            cand_code[stale], cand_dist[stale] = found
        slots = groups[pending, None] * k + cand_code[pending]  # (p, m)
        dist = cand_dist[pending].masked_fill(closed[slots], math.inf)
        best_value, best_pos = dist.min(1)
        stale = pending[torch.isinf(best_value)]
        if stale.numel():  # every candidate closed: new lists next round, no proposal now
            keep = ~torch.isinf(best_value)
            pending, slots, dist, best_value, best_pos = (
                t[keep] for t in (pending, slots, dist, best_value, best_pos)
            )
        second = dist.scatter(1, best_pos[:, None], math.inf).min(1).values
        if m < k:
            second = torch.where(torch.isinf(second), cand_dist[pending, -1], second)
        margin = second - best_value  # inf when only one open centroid is left
        slot = slots.gather(1, best_pos[:, None]).squeeze(1)
        # Proposals by slot, largest margin first; the rank within the slot decides acceptance.
        by_margin = torch.argsort(margin, descending=True, stable=True)
        order = by_margin[torch.argsort(slot[by_margin], stable=True)]
        sorted_slots = slot[order]
        counts = torch.bincount(sorted_slots, minlength=remaining.numel())
        rank = torch.arange(order.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[sorted_slots]
        accept = rank < remaining[sorted_slots]
        codes[pending[order[accept]]] = sorted_slots[accept] % k
        remaining -= torch.bincount(sorted_slots[accept], minlength=remaining.numel())
        pending = torch.cat([pending[order[~accept]], stale])
    return codes


def _nearest_open(
    x: torch.Tensor,
    rows: torch.Tensor,
    row_groups: torch.Tensor,
    centroids: torch.Tensor,
    closed: torch.Tensor,
    m: int,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The m nearest open centroids of the given rows, nearest first: codes (r, m) and |c|^2 - 2 x.c (r, m).

    closed: (G * K,) bool, slot g * K + c full; row_groups: (r,) the group of each row. Closed centroids that
    still make the list come last with +inf.
    """
    k = centroids.shape[0]
    c_sq = centroids.square().sum(1)
    codes = torch.empty(rows.numel(), m, dtype=torch.int64, device=x.device)
    values = torch.empty(rows.numel(), m, dtype=x.dtype, device=x.device)
    closed = closed.view(-1, k)
    for start in range(0, rows.numel(), chunk_size):
        chunk = x[rows[start : start + chunk_size]]
        row_closed = closed[0] if closed.shape[0] == 1 else closed[row_groups[start : start + chunk_size]]
        bias = c_sq.masked_fill(row_closed, math.inf)  # (K,) or (rows, K)
        found = torch.addmm(bias, chunk, centroids.T, alpha=-2).topk(m, dim=1, largest=False)
        values[start : start + chunk_size], codes[start : start + chunk_size] = found.values, found.indices
    return codes, values


def _update_centroids(x: torch.Tensor, codes: torch.Tensor, centroids: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Means of the clusters; an empty cluster is re-seeded on the point farthest from its own centroid."""
    k = centroids.shape[0]
    sums = _cluster_sums(x, codes, k, chunk_size)
    counts = torch.bincount(codes, minlength=k)
    updated = torch.where((counts > 0)[:, None], sums / counts.clamp(min=1)[:, None].to(x.dtype), centroids)
    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        distance = _distance_to(x, codes, updated, chunk_size)
        farthest = distance.topk(min(empty.numel(), x.shape[0])).indices
        updated[empty[: farthest.numel()]] = x[farthest]
    return updated


def _distance_to(x: torch.Tensor, codes: torch.Tensor, centroids: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """(N,) squared distance of each point to its own centroid, chunk by chunk."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        diff = x[start : start + chunk_size] - centroids[codes[start : start + chunk_size]]
        out[start : start + chunk_size] = diff.square().sum(1)
    return out


def _cluster_sums(x: torch.Tensor, codes: torch.Tensor, k: int, chunk_size: int) -> torch.Tensor:
    """(K, D) sum of the points in each cluster, deterministic on every device.

    CPU: index_add_. CUDA's index_add_ uses atomics (run-to-run float differences), so there a one-hot matmul
    per chunk does the sum instead.
    """
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
    if x.device.type == "cpu":
        return sums.index_add_(0, codes, x)
    for start in range(0, x.shape[0], chunk_size):
        one_hot = torch.nn.functional.one_hot(codes[start : start + chunk_size], k).to(x.dtype)
        sums += one_hot.T @ x[start : start + chunk_size]
    return sums
