import pytest

from align.baselines import popularity, rank_baseline, transitions
from align.metrics import ranking_metrics

TRAIN = [
    {"history": ["a"], "target": "b"},
    {"history": ["a", "b"], "target": "c"},
    {"history": ["x"], "target": "b"},
    {"history": ["b"], "target": "c"},
    {"history": ["c"], "target": "d"},
]


def test_popularity_ranks_by_target_count_then_id():
    assert popularity(TRAIN, [{"history": ["z"]}], 3) == [["b", "c", "d"]]


def test_transitions_follow_last_item_then_fill_with_popular():
    rows = [{"history": ["q", "b"], "target": "c"}, {"history": ["unseen"], "target": "b"}]
    ranked = transitions(TRAIN, rows, 3)
    assert ranked[0] == ["c", "b", "d"]  # b -> c twice, then popular fill without repeats
    assert ranked[1] == ["b", "c", "d"]
    metrics = ranking_metrics(ranked, ["c", "b"], ks=(1,))
    assert metrics["hr@1"] == 1.0


def test_unknown_baseline_lists_choices():
    with pytest.raises(ValueError, match="popularity, transitions"):
        rank_baseline("sasrec-typo", TRAIN, [], 5)
