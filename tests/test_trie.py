import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from align.decode.trie import SIDTrie


@st.composite
def catalogs(draw, max_levels: int = 5):
    """Unique (N, L) code tables with heavy prefix sharing: few codes per level, many items."""
    levels = draw(st.integers(1, max_levels))
    sizes = draw(st.lists(st.integers(1, 4), min_size=levels, max_size=levels))
    rows = draw(st.lists(st.tuples(*[st.integers(0, s - 1) for s in sizes]), min_size=1, max_size=40, unique=True))
    return torch.tensor(rows, dtype=torch.int64), tuple(sizes)


def brute_allowed(codes: torch.Tensor, prefix: list[int], size: int) -> list[bool]:
    t = len(prefix)
    nexts = {int(row[t]) for row in codes if row[:t].tolist() == prefix}
    return [c in nexts for c in range(size)]


def test_allowed_by_hand():
    trie = SIDTrie.from_codes(torch.tensor([[0, 1], [0, 2], [1, 0]]))
    assert trie.level_sizes == (2, 3) and trie.levels == 2 and trie.num_items == 3
    assert trie.allowed(torch.empty(1, 0, dtype=torch.int64)).tolist() == [[True, True]]
    assert trie.allowed(torch.tensor([[0], [1]])).tolist() == [[False, True, True], [True, False, False]]


@settings(max_examples=60, deadline=None)
@given(catalogs(), st.data())
def test_allowed_matches_brute_force(catalog, data):
    codes, sizes = catalog
    trie = SIDTrie.from_codes(codes, sizes)
    depth = data.draw(st.integers(0, len(sizes) - 1))
    # Half the prefixes are real (taken from items), half arbitrary (mostly dead ends).
    prefixes = [
        codes[data.draw(st.integers(0, len(codes) - 1)), :depth].tolist()
        if data.draw(st.booleans())
        else [data.draw(st.integers(0, s - 1)) for s in sizes[:depth]]
        for _ in range(6)
    ]
    got = trie.allowed(torch.tensor(prefixes, dtype=torch.int64).view(6, depth))
    assert got.tolist() == [brute_allowed(codes, p, sizes[depth]) for p in prefixes]


@settings(max_examples=40, deadline=None)
@given(catalogs())
def test_item_index_round_trip(catalog):
    codes, sizes = catalog
    trie = SIDTrie.from_codes(codes, sizes)
    assert trie.item_index(codes).tolist() == list(range(len(codes)))
    shuffled = torch.randperm(len(codes))
    assert trie.item_index(codes[shuffled]).tolist() == shuffled.tolist()


def test_item_index_unknown_and_out_of_range_codes():
    trie = SIDTrie.from_codes(torch.tensor([[0, 1], [1, 0]]), level_sizes=(2, 2))
    # [0, 2] would alias node 1's key (0 * 2 + 2 == 1 * 2 + 0) without the range check.
    query = torch.tensor([[1, 0], [0, 0], [0, 2], [-1, 1], [0, 1]])
    assert trie.item_index(query).tolist() == [1, -1, -1, -1, 0]


def test_from_codes_rejects_bad_catalogs():
    with pytest.raises(ValueError, match="items 0 and 2 share the SID"):
        SIDTrie.from_codes(torch.tensor([[0, 1], [1, 1], [0, 1]]))
    with pytest.raises(ValueError, match="item 1 has code 5 at level 1"):
        SIDTrie.from_codes(torch.tensor([[0, 1], [1, 5]]), level_sizes=(2, 4))
    with pytest.raises(ValueError, match="non-empty"):
        SIDTrie.from_codes(torch.empty(0, 3, dtype=torch.int64))


def test_check_fits_and_to():
    trie = SIDTrie.from_codes(torch.tensor([[0, 1], [1, 0]]), level_sizes=(2, 3))
    trie.check_fits((2, 4))
    with pytest.raises(ValueError, match="do not fit"):
        trie.check_fits((2, 2))
    with pytest.raises(ValueError, match="do not fit"):
        trie.check_fits((2, 3, 3))
    assert trie.to("cpu") is trie


def test_children_gives_node_ids_that_step_agrees_with():
    codes = torch.tensor([[0, 0, 1], [0, 1, 0], [2, 1, 1], [2, 1, 0]])
    trie = SIDTrie.from_codes(codes)
    nodes = trie.roots(4)
    for level in range(3):
        child = trie.children(level, nodes)
        stepped = trie.step(level, nodes, codes[:, level])
        assert torch.equal(child.gather(1, codes[:, level : level + 1])[:, 0], stepped)
        nodes = stepped
    assert trie.leaf_item(nodes).tolist() == [0, 1, 2, 3]
    assert trie.children(0, torch.tensor([-1])).tolist() == [[-1, -1, -1]]


def test_trie_imports_without_transformers():
    code = "import sys, align.decode as d; d.SIDTrie; assert 'transformers' not in sys.modules, 'transformers loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
