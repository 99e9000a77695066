"""Collision resolution: hand-checked extra level and a property test that any codes become unique."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from align.sid.collisions import check_code_space, collision_stats, make_unique


def test_extra_level_ranks_items_sharing_codes_in_catalog_order():
    codes = torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2]])
    assert make_unique(codes).tolist() == [[1, 2, 0], [1, 2, 1], [3, 4, 0], [1, 2, 2]]


def test_extra_level_only_when_codes_collide():
    assert make_unique(np.array([[0], [1]])).tolist() == [[0], [1]]
    assert make_unique(np.array([[0], [1], [0]])).tolist() == [[0, 0], [1, 0], [0, 1]]


def test_collision_stats_by_hand():
    stats = collision_stats(torch.tensor([[1, 2], [1, 2], [3, 4], [1, 2]]))
    assert stats == {"collision_rate": 0.75, "colliding_items": 3, "distinct_codes": 2, "largest_group": 3}
    assert collision_stats(torch.tensor([[0], [1]]))["collision_rate"] == 0.0


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="extra-level"):
        make_unique(torch.zeros(2, 2, dtype=torch.int64), method="shuffle")


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        np.int64,
        st.tuples(st.integers(0, 40), st.integers(1, 4)),
        elements=st.integers(0, 3),
    )
)
def test_any_codes_become_unique_and_keep_their_prefix(codes):
    out = make_unique(codes)
    n, levels = codes.shape
    largest = collision_stats(codes)["largest_group"]
    assert out.shape == (n, levels + (largest > 1))  # a collision level only where codes collide
    assert np.array_equal(out[:, :levels].numpy(), codes)
    assert len({tuple(row) for row in out.tolist()}) == n
    if largest > 1:
        assert int(out[:, -1].max()) == largest - 1  # no more codes than the largest group needs


def test_reassign_moves_all_but_the_nearest_to_the_nearest_free_code():
    # Prefix (0,): items 0, 1, 3 share code 1, item 2 holds code 0; K = 4, so codes 2 and 3 are free.
    codes = torch.tensor([[0, 1], [0, 1], [0, 0], [0, 1], [1, 1]])
    distances = torch.tensor(
        [
            [0.0, 0.5, 0.9, 0.1],  # moves (0.5 > 0.2) to its nearest free code, 3
            [0.0, 0.2, 0.3, 0.4],  # nearest of the three to code 1: keeps it
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.6, 0.8, 0.7],  # moves; wants 3 too, but item 0 is nearer to it (0.1 < 0.7): gets 2
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    calls = []

    def distances_of(rows):
        calls.append(rows.tolist())
        return distances[rows]

    out = make_unique(codes, "reassign", level_sizes=[2, 4], distances_of=distances_of)
    assert out.tolist() == [[0, 3], [0, 1], [0, 0], [0, 2], [1, 1]]
    assert calls == [[0, 1, 3], [0, 3]]  # distances only for colliding items, then for the movers


def test_reassign_without_distances_takes_the_lowest_free_codes_in_row_order():
    codes = torch.tensor([[2, 0], [2, 0], [2, 0], [2, 1]])
    assert make_unique(codes, "reassign", level_sizes=[3, 4]).tolist() == [[2, 0], [2, 2], [2, 3], [2, 1]]
    assert make_unique(torch.tensor([[0], [1]]), "reassign").tolist() == [[0], [1]]


def test_reassign_names_a_prefix_with_more_items_than_codes():
    codes = torch.tensor([[1, 0], [1, 1], [1, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"3 items share the prefix \[1\] but the last level has only 2 codes.*"
                       "extra-level or a bigger --codebook_size"):  # fmt: skip
        make_unique(codes, "reassign", level_sizes=[2, 2])


def test_code_space_is_checked_up_front():
    check_code_space(16, [4, 4], "reassign")
    check_code_space(17, [4, 4], "extra-level")  # a collision level makes room
    with pytest.raises(ValueError, match=r"17 items do not fit in 4 x 4 = 16 SIDs"):
        check_code_space(17, [4, 4], "reassign")


@settings(max_examples=200, deadline=None)
@given(
    codes=arrays(np.int64, st.tuples(st.integers(1, 40), st.integers(1, 3)), elements=st.integers(0, 3)),
    seed=st.integers(0, 2**16),
    extra_codes=st.integers(0, 3),
)
def test_reassign_makes_any_codes_unique_and_only_moves_colliding_items(codes, seed, extra_codes):
    k = int(codes[:, -1].max()) + 1 + extra_codes
    prefix_sizes = collision_stats(codes[:, :-1])["largest_group"] if codes.shape[1] > 1 else codes.shape[0]
    distances = torch.rand(codes.shape[0], k, generator=torch.Generator().manual_seed(seed))
    if prefix_sizes > k:
        with pytest.raises(ValueError, match="share the prefix"):
            make_unique(codes, "reassign", [4] * (codes.shape[1] - 1) + [k], lambda rows: distances[rows])
        return
    out = make_unique(codes, "reassign", [4] * (codes.shape[1] - 1) + [k], lambda rows: distances[rows])
    assert out.shape == codes.shape and len({tuple(row) for row in out.tolist()}) == codes.shape[0]
    assert np.array_equal(out[:, :-1].numpy(), codes[:, :-1]) and int(out[:, -1].max()) < k
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    alone = counts[inverse.reshape(-1)] == 1
    assert np.array_equal(out.numpy()[alone], codes[alone])  # items that did not collide keep their SID
    moved = (out.numpy() != codes).any(1)
    assert moved.sum() == (counts[counts > 1] - 1).sum()  # one item of each collision group stays
