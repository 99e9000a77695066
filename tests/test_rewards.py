import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from align.tokens import SIDVocab, format_sid
from align.train.rewards import REWARDS, make_cf, make_hit, make_prefix, make_rank, make_rewards, rank_penalties

# Level 0 codes 0..2 are ids 10..12, level 1 codes 0..3 are ids 13..16; 3 is EOS.
VOCAB = SIDVocab(level_sizes=(3, 4), first_ids=(10, 13))
EOS = 3
TARGET = "<a_1><b_2>"  # ids [11, 15]


def test_hit_on_hand_made_completions():
    completions = [[11, 15, EOS], [11, 14, EOS], [12, 15, EOS], [EOS], [11], [11, 15]]
    assert make_hit(VOCAB)(completion_ids=completions, target=[TARGET] * 6) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_prefix_counts_matching_leading_levels():
    completions = [[11, 15, EOS], [11, 14, EOS], [12, 15, EOS], [EOS], [11, EOS]]
    assert make_prefix(VOCAB)(completion_ids=completions, target=[TARGET] * 5) == [1.0, 0.5, 0.0, 0.0, 0.5]


def test_rank_penalises_wrong_beams_of_groups_that_hit():
    # Group 1 finds the target at rank 1; group 2 never finds it.
    completions = [[10, 13, EOS], [11, 15, EOS], [12, 13, EOS], [11, 13, EOS]] + [[10, 13, EOS]] * 4
    rewards = make_rank(VOCAB)(completion_ids=completions, target=[TARGET] * 8, beam_rank=[0, 1, 2, 3] * 2)
    total = 1 + 1 / math.log2(3) + 1 / 2 + 1 / math.log2(5)  # 2.5616
    expected = [-1 / total, 0.0, -0.5 / total, -(1 / math.log2(5)) / total] + [0.0] * 4
    assert rewards == pytest.approx(expected)
    assert rewards[:4] == pytest.approx([-0.39038, 0.0, -0.19519, -0.16813], abs=1e-5)


def test_rank_penalties_are_normalised_ndcg_discounts():
    assert rank_penalties(1) == [-1.0]
    assert rank_penalties(2) == pytest.approx(
        [-1 / (1 + 1 / math.log2(3)), -(1 / math.log2(3)) / (1 + 1 / math.log2(3))]
    )
    assert sum(rank_penalties(8)) == pytest.approx(-1.0)


def test_rewards_reject_targets_that_are_not_sids():
    with pytest.raises(ValueError, match="not a 2-level SID"):
        make_hit(VOCAB)(completion_ids=[[11, 15]], target=["red shoe"])


def test_make_rewards_builds_named_functions_and_weights():
    funcs, weights = make_rewards("hit, rank,prefix", "1.0,1.0,0.5", VOCAB)
    assert [f.__name__ for f in funcs] == ["hit", "rank", "prefix"]  # TRL logs rewards under these names
    assert weights == [1.0, 1.0, 0.5]
    assert make_rewards(["prefix", "hit"], None, VOCAB)[1] == [0.5, 1.0]  # DEFAULT_WEIGHTS
    assert make_rewards("hit,prefix", [2, 0.5], VOCAB)[1] == [2.0, 0.5]


@pytest.mark.parametrize(
    ("names", "weights", "message"),
    [
        ("hit,ndcg", None, "unknown reward 'ndcg'; valid rewards are: hit, rank, prefix, cf"),
        ("hit,rank", "1.0", "2 rewards"),
        (" , ", None, "no reward given"),
    ],
)
def test_make_rewards_errors(names, weights, message):
    with pytest.raises(ValueError, match=message):
        make_rewards(names, weights, VOCAB)


def test_rewards_dict_holds_factories():
    assert set(REWARDS) == {"hit", "rank", "prefix", "cf"}


codes = st.tuples(st.integers(0, 2), st.integers(0, 3))


@given(target=codes, beams=st.lists(codes, min_size=1, max_size=6, unique=True))
def test_reward_properties_for_any_group(target, beams):
    completion_ids = [[*VOCAB.ids(c), EOS] for c in beams]
    targets = [format_sid(target)] * len(beams)
    ranks = list(range(len(beams)))
    hits = make_hit(VOCAB)(completion_ids=completion_ids, target=targets)
    prefixes = make_prefix(VOCAB)(completion_ids=completion_ids, target=targets)
    ranked = make_rank(VOCAB)(completion_ids=completion_ids, target=targets, beam_rank=ranks)
    assert hits == [float(tuple(c) == target) for c in beams]
    assert all((p == 1.0) == (h == 1.0) and 0.0 <= p <= 1.0 for p, h in zip(prefixes, hits, strict=True))
    if any(hits):
        # Wrong beams are penalised, more the higher they rank; the hit is not.
        wrong = [r for r, h in zip(ranked, hits, strict=True) if not h]
        assert all(r < 0 for r in wrong) and wrong == sorted(wrong)
        assert [r for r, h in zip(ranked, hits, strict=True) if h] == [0.0]
    else:
        assert ranked == [0.0] * len(beams)


class TableScorer:
    """A stand-in SASRec: P(item | last history item) from a hand-written table; records what it was asked."""

    TABLE = {"x": {"i1": 0.5, "i2": 0.25}, "y": {"i1": 0.125}}

    def __init__(self) -> None:
        self.calls: list[tuple[list, list]] = []

    def score(self, histories, items):
        self.calls.append((list(histories), list(items)))
        return torch.tensor([self.TABLE[h[-1]].get(item, 0.0) for h, item in zip(histories, items, strict=True)])


ITEM_OF_SID = {(1, 2): "i1", (0, 0): "i2", (2, 3): "i3"}  # <a_1><b_2> is i1, ...


def test_cf_is_the_scorer_probability_of_the_completion_item():
    scorer = TableScorer()
    cf = make_cf(VOCAB, scorer, ITEM_OF_SID)
    completions = [[11, 15, EOS], [10, 13, EOS], [12, 16, EOS], [EOS], [11, 13, EOS], [11, 15, EOS]]
    history = [["a", "x"]] * 5 + [["y"]]
    # i1, i2, i3 (0 in the table), not a SID, a SID of no item, i1 after y.
    assert cf(completion_ids=completions, history=history, target=[TARGET] * 6) == [0.5, 0.25, 0.0, 0.0, 0.0, 0.125]
    assert scorer.calls == [(history, ["i1", "i2", "i3", None, None, "i1"])]
    assert cf.__name__ == "cf"
    with pytest.raises(ValueError, match="'history' column .* rebuild it with `align data`"):
        cf(completion_ids=completions, target=[TARGET] * 6)


def test_cf_without_a_sasrec_model_says_which_command_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"reward 'cf' needs a SASRec model: run `align baseline --run_dir "):
        make_rewards("hit,cf", None, VOCAB, run_dir=tmp_path)
    with pytest.raises(ValueError, match="pass run_dir"):
        make_rewards("cf", None, VOCAB)
    assert [f.__name__ for f in make_rewards("hit", None, VOCAB, run_dir=tmp_path)[0]] == ["hit"]


def test_cf_from_a_run_directory_uses_its_sasrec_and_sid_map(tmp_path):
    from align.run_dir import RunDir, write_json
    from align.sasrec import SASRec, SASRecConfig, SASRecScorer

    run = RunDir(tmp_path)
    with run.building("sid") as out:
        write_json(out / "sid_map.json", {"levels": 2, "level_sizes": [3, 4],
                                          "items": {"i1": [1, 2], "i2": [0, 0], "i3": [2, 3]}})
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=3, hidden=8, layers=1, heads=2, max_len=4))
    with run.building("sasrec") as out:
        torch.save(model.state_dict(), out / "model.pt")
        write_json(out / "config.json", {"n_items": 3, "hidden": 8, "layers": 1, "heads": 2, "max_len": 4,
                                         "dropout": 0.2, "best_epoch": 1})
        write_json(out / "items.json", ["i1", "i2", "i3"])

    funcs, weights = make_rewards("cf,hit", None, VOCAB, run_dir=tmp_path)
    history = [["i2", "i3"]] * 4
    rewards = funcs[0](completion_ids=[[11, 15, EOS], [10, 13, EOS], [12, 16, EOS], [EOS]], history=history)
    probs = SASRecScorer(model, ["i1", "i2", "i3"]).logits(history[:1]).softmax(1)[0].tolist()
    assert rewards == pytest.approx([*probs, 0.0])  # i1, i2, i3 in that order: the whole catalog, sums to 1
    assert weights == [1.0, 1.0]
