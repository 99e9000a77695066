import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from align.metrics import hit_rate_at_k, ndcg_at_k, ranking_metrics, target_ranks


def test_single_user_by_hand():
    ranked, targets = [[3, 1, 2]], [1]
    assert hit_rate_at_k(ranked, targets, 1) == 0.0
    assert hit_rate_at_k(ranked, targets, 5) == 1.0
    assert ndcg_at_k(ranked, targets, 1) == 0.0
    assert ndcg_at_k(ranked, targets, 5) == pytest.approx(1 / math.log2(3))


def test_several_users_by_hand():
    ranked = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "a"], ["a", "a", "c"]]
    targets = ["a", "b", "x", "c"]  # ranks 0, 2, absent, 2 (repeats do not shift the rank)
    assert target_ranks(ranked, targets).tolist() == [0, 2, -1, 2]
    got = ranking_metrics(ranked, targets, ks=(1, 3))
    assert list(got) == ["hr@1", "ndcg@1", "hr@3", "ndcg@3"]
    assert got["hr@1"] == 0.25 and got["ndcg@1"] == 0.25
    assert got["hr@3"] == 0.75
    assert got["ndcg@3"] == pytest.approx((1 + 2 / math.log2(4)) / 4)  # (1 + 0.5 + 0 + 0.5) / 4 = 0.5


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="one list per user"):
        hit_rate_at_k([[1]], [1, 2], 1)
    with pytest.raises(ValueError, match="no users"):
        ndcg_at_k([], [], 1)
    with pytest.raises(ValueError, match="k must be"):
        ranking_metrics([[1]], [1], ks=(0,))


@given(
    st.lists(st.tuples(st.lists(st.integers(0, 9), max_size=12), st.integers(0, 9)), min_size=1, max_size=20),
    st.integers(1, 12),
)
def test_metrics_are_bounded_and_monotone_in_k(users, k):
    ranked, targets = [u[0] for u in users], [u[1] for u in users]
    hr, ndcg = hit_rate_at_k(ranked, targets, k), ndcg_at_k(ranked, targets, k)
    assert 0.0 <= ndcg <= hr <= 1.0
    assert hit_rate_at_k(ranked, targets, k + 1) >= hr
    assert ndcg_at_k(ranked, targets, k + 1) >= ndcg
    # A target in first place scores 1 on both, whatever k.
    assert ranking_metrics([[t] for t in targets], targets, ks=(k,)) == {f"hr@{k}": 1.0, f"ndcg@{k}": 1.0}
