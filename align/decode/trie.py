"""The catalog's Semantic IDs as a trie made of tensors, for constrained decoding on any device.

The trie knows nothing about tokenizers or models: it works on integer codes only. A node at depth `t` is one
distinct SID prefix of length `t` (depth 0 holds only the root, node 0). Depth t+1's nodes are numbered in sorted
order of the key `parent_node * level_sizes[t] + code`, so one `searchsorted` turns (node, code) into the child's
node id, for any batch of nodes at once. Memory is O(N * L); no dense (nodes x codes) table is ever built, so a
million-item catalog costs what its code table costs. Depth-L nodes are whole SIDs, i.e. catalog items.
"""

from collections.abc import Sequence

import torch


class SIDTrie:
    """Valid SID prefixes of a catalog, as tensors. Knows nothing about tokenizers or models.

    Attributes:
        levels: SID length L.
        level_sizes: codes per level (K_0, ..., K_{L-1}).
        num_items: catalog size N.
        child_keys: per level t, sorted (num_nodes[t+1],) int64 keys `parent * K_t + code`; position = child id.
        leaf_items: (N,) int64, catalog row (into the `codes` given to `from_codes`) of each depth-L node.
    """

    def __init__(self, level_sizes: Sequence[int], child_keys: list[torch.Tensor], leaf_items: torch.Tensor) -> None:
        self.level_sizes = tuple(int(k) for k in level_sizes)
        self.levels = len(self.level_sizes)
        self.child_keys = child_keys
        self.leaf_items = leaf_items
        self.num_items = int(leaf_items.shape[0])

    @classmethod
    def from_codes(cls, codes: torch.Tensor, level_sizes: Sequence[int] | None = None) -> "SIDTrie":
        """Build the trie of a catalog.

        Args:
            codes: (N, L) integer codes, one unique row per item; row i is catalog item i.
            level_sizes: codes per level; default max code + 1 per column.

        Raises:
            ValueError: empty catalog, a code out of range, or two items with the same SID.
        """
        codes = torch.as_tensor(codes, dtype=torch.int64).cpu()
        if codes.dim() != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
            raise ValueError(f"SID codes must be a non-empty (items, levels) table, got shape {tuple(codes.shape)}")
        levels = codes.shape[1]
        if level_sizes is None:
            level_sizes = (codes.max(0).values + 1).tolist()
        if len(level_sizes) != levels:
            raise ValueError(f"level_sizes has {len(level_sizes)} entries but the SIDs have {levels} levels")
        for level, size in enumerate(level_sizes):
            bad = ((codes[:, level] < 0) | (codes[:, level] >= size)).nonzero()
            if len(bad):
                row = int(bad[0])
                raise ValueError(
                    f"item {row} has code {int(codes[row, level])} at level {level}, outside 0..{size - 1}: "
                    "pass the codebook sizes the SIDs were built with as level_sizes"
                )
        child_keys = []
        node = torch.zeros(codes.shape[0], dtype=torch.int64)  # every item starts at the root
        for level, size in enumerate(level_sizes):
            keys, node = torch.unique(node * size + codes[:, level], sorted=True, return_inverse=True)
            child_keys.append(keys)
        if len(child_keys[-1]) != codes.shape[0]:
            first, second = _first_duplicate(node)
            raise ValueError(
                f"items {first} and {second} share the SID {codes[first].tolist()}: SIDs must be unique "
                "(resolve collisions when building them)"
            )
        leaf_items = torch.empty_like(node)
        leaf_items[node] = torch.arange(codes.shape[0])
        return cls(level_sizes, child_keys, leaf_items)

    @property
    def device(self) -> torch.device:
        return self.leaf_items.device

    def to(self, device: torch.device | str) -> "SIDTrie":
        """A copy on `device` (self when already there)."""
        if torch.device(device) == self.device:
            return self
        return SIDTrie(self.level_sizes, [k.to(device) for k in self.child_keys], self.leaf_items.to(device))

    def check_fits(self, token_level_sizes: Sequence[int]) -> None:
        """Raise ValueError unless every code has a token: same depth, no level wider than its token block."""
        if len(token_level_sizes) != self.levels or any(
            t > v for t, v in zip(self.level_sizes, token_level_sizes, strict=True)
        ):
            raise ValueError(
                f"the catalog's SID levels {self.level_sizes} do not fit the tokenizer's SID tokens "
                f"{tuple(token_level_sizes)}: build the SIDVocab from the same sid_map.json as the trie"
            )

    def roots(self, batch: int) -> torch.Tensor:
        """(batch,) int64 root node ids: the state before any code."""
        return torch.zeros(batch, dtype=torch.int64, device=self.device)

    def children(self, level: int, nodes: torch.Tensor) -> torch.Tensor:
        """Child node of every (node, code) pair at one level.

        Args:
            level: t, the depth of `nodes` (0 <= t < L).
            nodes: (B,) int64 node ids at depth t; -1 (a dead prefix) is allowed and has no children.

        Returns:
            (B, K_t) int64: column c holds the depth-(t+1) node of prefix + (c,), or -1 if it is not a catalog prefix.
        """
        size = self.level_sizes[level]
        keys = self.child_keys[level]
        query = nodes[:, None] * size + torch.arange(size, device=nodes.device)
        pos = torch.searchsorted(keys, query).clamp_(max=len(keys) - 1)
        found = (keys[pos] == query) & (nodes[:, None] >= 0)
        return torch.where(found, pos, -1)

    def step(self, level: int, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """(B,) nodes at depth t and (B,) codes -> (B,) nodes at depth t+1, -1 where not a catalog prefix."""
        size = self.level_sizes[level]
        keys = self.child_keys[level]
        query = nodes * size + codes
        pos = torch.searchsorted(keys, query).clamp_(max=len(keys) - 1)
        found = (keys[pos] == query) & (nodes >= 0) & (codes >= 0) & (codes < size)
        return torch.where(found, pos, -1)

    def walk(self, prefixes: torch.Tensor) -> torch.Tensor:
        """(B, t) code prefixes -> (B,) node ids at depth t, -1 for prefixes no item has."""
        nodes = self.roots(prefixes.shape[0])
        for level in range(prefixes.shape[1]):
            nodes = self.step(level, nodes, prefixes[:, level])
        return nodes

    def allowed(self, prefixes: torch.Tensor) -> torch.Tensor:
        """(B, t) int64 prefixes, 0 <= t < L -> (B, K_t) bool: which next codes continue a catalog SID."""
        depth = prefixes.shape[1]
        if not 0 <= depth < self.levels:
            raise ValueError(f"prefixes must have 0..{self.levels - 1} codes, got {depth}")
        return self.children(depth, self.walk(prefixes.to(self.device))) >= 0

    def item_index(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., L) codes -> (...) catalog row of each SID, -1 where no item has it."""
        if codes.shape[-1] != self.levels:
            raise ValueError(f"a SID has {self.levels} codes, got {codes.shape[-1]}")
        flat = codes.reshape(-1, self.levels).to(self.device)
        return self.leaf_item(self.walk(flat)).view(codes.shape[:-1])

    def leaf_item(self, nodes: torch.Tensor) -> torch.Tensor:
        """(B,) depth-L node ids (-1 allowed) -> (B,) catalog rows (-1 stays -1)."""
        return torch.where(nodes >= 0, self.leaf_items[nodes.clamp(min=0)], -1)


def _first_duplicate(leaf: torch.Tensor) -> tuple[int, int]:
    """The first two rows that landed on the same leaf."""
    order = torch.argsort(leaf, stable=True)
    same = (leaf[order[1:]] == leaf[order[:-1]]).nonzero()
    i = int(same[0])
    pair = sorted((int(order[i]), int(order[i + 1])))
    return pair[0], pair[1]
