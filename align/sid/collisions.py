"""Make Semantic IDs unique: two items that quantize to the same code sequence must still be told apart.

"extra-level" (TIGER): when some items share their codes, append one level whose code is the item's rank among the
items sharing its codes, in catalog order. Non-colliding items get 0 there, so every SID keeps the same length, and
the new level has only as many codes as the largest collision group needs. Codes that are already unique are kept
as they are: a level that is always 0 would cost every prompt and every decoding step a token for nothing.

"reassign": SIDs keep their length. In each group of items sharing their codes, the item nearest to the group's
last-level centroid keeps the code; the others move to the nearest last-level code that no item with the same
prefix (earlier codes) uses. Nearest is measured by `distances_of` (the squared distance of an item's last-level
residual to each last-level centroid); without it, movers take the lowest free codes. A prefix holding more items
than the last level has codes cannot be made unique this way: that is a clear error.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

# rows (M,) int64 -> (M, K_last) squared distances of those items' last-level residuals to the last-level codes.
DistancesOf = Callable[[torch.Tensor], torch.Tensor]


def _groups(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, L) codes -> group id per item (N,) and size of each group (G,); a group = items with equal codes."""
    _, group, sizes = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return group, sizes


def extra_level(codes: torch.Tensor, level_sizes: Sequence[int] | None = None, distances_of=None) -> torch.Tensor:
    """(N, L) -> (N, L + 1) where codes collide: the last column ranks each item within its group of equal codes,
    in row order; (N, L) unchanged when they are already unique."""
    if codes.shape[0] == 0:
        return codes
    group, sizes = _groups(codes)
    if int(sizes.max()) == 1:
        return codes
    order = torch.argsort(group, stable=True)  # rows of each group together, in catalog order
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.empty_like(group)
    rank[order] = torch.arange(codes.shape[0], device=codes.device) - starts[group[order]]
    return torch.cat([codes, rank[:, None]], dim=1)


def reassign(
    codes: torch.Tensor, level_sizes: Sequence[int] | None = None, distances_of: DistancesOf | None = None
) -> torch.Tensor:
    """(N, L) -> (N, L): colliding items move to the nearest last-level code that is free within their prefix.

    Args:
        codes: (N, L) int64.
        level_sizes: codes per level (default: largest code + 1); the last entry bounds the free codes.
        distances_of: see DistancesOf; None = no preference (lowest free code first, the keeper is the first row).

    Raises:
        ValueError: a prefix has more items than the last level has codes.
    """
    n, levels = codes.shape
    if n == 0:
        return codes
    k = int(level_sizes[-1]) if level_sizes is not None else int(codes[:, -1].max()) + 1
    prefix = torch.unique(codes[:, :-1], dim=0, return_inverse=True)[1] if levels > 1 else codes[:, 0] * 0
    prefix_sizes = torch.bincount(prefix)
    if int(prefix_sizes.max()) > k:
        worst = int(prefix_sizes.argmax())
        row = int(torch.nonzero(prefix == worst)[0])
        raise ValueError(
            f"{int(prefix_sizes[worst])} items share the prefix {codes[row, :-1].tolist()} but the last level has "
            f"only {k} codes: use --collision extra-level or a bigger --codebook_size"
        )
    group, sizes = _groups(codes)
    colliding = torch.nonzero(sizes[group] > 1).flatten()
    if colliding.numel() == 0:
        return codes
    own = distances_of(colliding).gather(1, codes[colliding, -1:]).squeeze(1) if distances_of else None
    # Keeper of each group: the colliding row nearest to its own code (ties: first row); everyone else moves.
    order = colliding if own is None else colliding[torch.argsort(own, stable=True)]
    order = order[torch.argsort(group[order], stable=True)]
    first_of_group = torch.ones(order.numel(), dtype=torch.bool, device=codes.device)
    first_of_group[1:] = group[order[1:]] != group[order[:-1]]
    movers = order[~first_of_group].sort().values
    distances = (
        distances_of(movers).to(torch.float64)
        if distances_of
        else torch.arange(k, dtype=torch.float64, device=codes.device).expand(movers.numel(), k)
    )
    taken = torch.zeros(int(prefix.max()) + 1, k, dtype=torch.bool, device=codes.device)
    stay = torch.ones(n, dtype=torch.bool, device=codes.device)
    stay[movers] = False
    taken[prefix[stay], codes[stay, -1]] = True
    out = codes.clone()
    out[movers, -1] = _nearest_free(distances, prefix[movers], taken)
    return out


def _nearest_free(distances: torch.Tensor, slot_group: torch.Tensor, taken: torch.Tensor) -> torch.Tensor:
    """Give each of M rows a distinct code of its group that is not taken, nearest first.

    Rounds: every unplaced row proposes its nearest free code; of the rows proposing the same (group, code), the
    nearest one gets it. Each round places at least one row per contested code, so it ends.

    Args:
        distances: (M, K) row-to-code distances.
        slot_group: (M,) group of each row.
        taken: (G, K) bool, codes already used in each group; updated in place.

    Returns:
        (M,) int64 codes.
    """
    m, k = distances.shape
    result = torch.empty(m, dtype=torch.int64, device=distances.device)
    pending = torch.arange(m, device=distances.device)
    while pending.numel():
        masked = distances[pending].masked_fill(taken[slot_group[pending]], math.inf)
        best_dist, best = masked.min(dim=1)
        slot = slot_group[pending] * k + best
        by_dist = torch.argsort(best_dist, stable=True)
        order = by_dist[torch.argsort(slot[by_dist], stable=True)]
        winner = torch.ones(order.numel(), dtype=torch.bool, device=distances.device)
        winner[1:] = slot[order[1:]] != slot[order[:-1]]
        placed = order[winner]
        result[pending[placed]] = best[placed]
        taken.view(-1)[slot[placed]] = True
        pending = pending[order[~winner]].sort().values
    return result


COLLISION_METHODS: dict[str, Callable[..., torch.Tensor]] = {"extra-level": extra_level, "reassign": reassign}


def make_unique(
    codes: torch.Tensor | np.ndarray,
    method: str = "extra-level",
    level_sizes: Sequence[int] | None = None,
    distances_of: DistancesOf | None = None,
) -> torch.Tensor:
    """(N, L) int codes -> (N, L') int64 codes whose rows are all distinct.

    extra-level keeps the original codes as a prefix (L' = L or L + 1); reassign keeps L' = L and changes only the
    last code of colliding items. `level_sizes` and `distances_of` matter to reassign only.
    """
    if method not in COLLISION_METHODS:
        raise ValueError(f"unknown collision method {method!r}; choose one of {', '.join(COLLISION_METHODS)}")
    codes = torch.as_tensor(codes, dtype=torch.int64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D (items, levels) array, got shape {tuple(codes.shape)}")
    return COLLISION_METHODS[method](codes, level_sizes, distances_of)


def check_code_space(n_items: int, level_sizes: Sequence[int], method: str) -> None:
    """Refuse up front a catalog that `method` cannot give distinct SIDs of these level sizes.

    extra-level can always add codes; reassign has exactly prod(level_sizes) SIDs to hand out.
    """
    space = math.prod(int(k) for k in level_sizes)
    if method == "reassign" and n_items > space:
        raise ValueError(
            f"{n_items} items do not fit in {' x '.join(map(str, level_sizes))} = {space} SIDs: "
            "raise --codebook_size or --levels, or use --collision extra-level"
        )


def collision_stats(codes: torch.Tensor | np.ndarray) -> dict:
    """How many items share their full code with another item.

    Returns:
        collision_rate: fraction of items whose code is shared; colliding_items: their number;
        distinct_codes: number of distinct code sequences; largest_group: items behind the most shared code.
    """
    codes = torch.as_tensor(codes, dtype=torch.int64)
    if codes.shape[0] == 0:
        return {"collision_rate": 0.0, "colliding_items": 0, "distinct_codes": 0, "largest_group": 0}
    _, sizes = _groups(codes)
    colliding = int(sizes[sizes > 1].sum())
    return {
        "collision_rate": colliding / codes.shape[0],
        "colliding_items": colliding,
        "distinct_codes": int(sizes.numel()),
        "largest_group": int(sizes.max()),
    }
