"""GRPO rewards for SID completions, with TRL's reward signature.

TRL calls each reward with keyword arguments: `prompts`, `completions`, `completion_ids` (token ids of each
completion), every dataset column (here `target`, the target SID string) and the extra keys returned by the
rollout function (here `beam_rank`). Completions are read through `SIDVocab` from their token ids, never by
re-parsing text. Each factory takes the vocab and returns a function named after the reward, which is the name
TRL logs it under (`rewards/hit/mean`, ...).

- hit:    1.0 if the completion's first L tokens spell the target SID, else 0.0.
- prefix: matched leading levels / L (partial credit for the right region of the catalog).
- rank:   MiniOneRec's ranking penalty. Completions come in groups (the G beams of one prompt, `beam_rank`
          0..G-1, best first). In a group that contains the target, a wrong completion at rank r gets
          -w_r / sum_{j<G} w_j with w_r = 1 / log2(r + 2) (an NDCG discount), and the hit gets 0; a group
          without the target gets 0 everywhere. Use it with `hit`: hit + rank is MiniOneRec's "ranking" reward,
          which pushes the target up and the confident wrong beams down.
- cf:     collaborative filtering: the probability (softmax over the catalog) that the run's SASRec model
          (`align baseline`) gives the completion's item after the prompt's history (the `history` column of
          grpo.jsonl); 0.0 for a completion that is not a catalog item. It credits plausible wrong items too.
"""

import math
import os
from collections.abc import Callable, Mapping, Sequence

from align.tokens import SIDVocab, parse_sid

RewardFunc = Callable[..., list[float]]


def _target_ids(vocab: SIDVocab, target: str) -> list[int]:
    codes = parse_sid(target, vocab.levels)
    if codes is None:
        raise ValueError(
            f"target {target!r} is not a {vocab.levels}-level SID such as <a_1><b_2>...: the GRPO data's "
            "'target' column must hold the target item's SID (rebuild it with `align data`)"
        )
    return vocab.ids(codes)


def _hits(vocab: SIDVocab, completion_ids: Sequence[Sequence[int]], target: Sequence[str]) -> list[bool]:
    return [list(ids[: vocab.levels]) == _target_ids(vocab, t) for ids, t in zip(completion_ids, target, strict=True)]


def make_hit(vocab: SIDVocab) -> RewardFunc:
    def hit(completion_ids: list[list[int]], target: list[str], **kwargs) -> list[float]:
        """1.0 where the completion spells the target SID, else 0.0."""
        return [float(h) for h in _hits(vocab, completion_ids, target)]

    return hit


def make_prefix(vocab: SIDVocab) -> RewardFunc:
    def prefix(completion_ids: list[list[int]], target: list[str], **kwargs) -> list[float]:
        """Fraction of leading SID levels that match the target's."""
        out = []
        for ids, t in zip(completion_ids, target, strict=True):
            matched = 0
            for got, want in zip(ids[: vocab.levels], _target_ids(vocab, t), strict=False):
                if got != want:
                    break
                matched += 1
            out.append(matched / vocab.levels)
        return out

    return prefix


def rank_penalties(group_size: int) -> list[float]:
    """-w_r / sum_j w_j for r < group_size, w_r = 1 / log2(r + 2): the penalty of a wrong item at rank r."""
    weights = [1.0 / math.log2(r + 2) for r in range(group_size)]
    total = sum(weights)
    return [-w / total for w in weights]


def make_rank(vocab: SIDVocab) -> RewardFunc:
    def rank(completion_ids: list[list[int]], target: list[str], beam_rank: list[int], **kwargs) -> list[float]:
        """NDCG-style penalty on wrong beams of groups that found the target (see the module docstring)."""
        hits = _hits(vocab, completion_ids, target)
        # A group starts where beam_rank restarts at 0: the rollout returns each prompt's beams together, in order.
        starts = [i for i, r in enumerate(beam_rank) if r == 0 or i == 0] + [len(beam_rank)]
        out: list[float] = []
        for start, end in zip(starts, starts[1:], strict=False):
            group_hits = hits[start:end]
            if not any(group_hits):
                out += [0.0] * (end - start)
                continue
            penalties = rank_penalties(max(beam_rank[start:end]) + 1)
            out += [0.0 if h else penalties[r] for h, r in zip(group_hits, beam_rank[start:end], strict=True)]
        return out

    return rank


def make_cf(vocab: SIDVocab, scorer, item_of_sid: Mapping[tuple[int, ...], str]) -> RewardFunc:
    """The `cf` reward.

    Args:
        vocab: where the SID tokens sit.
        scorer: an align.sasrec.SASRecScorer (anything with `score(histories, items) -> (B,) tensor`).
        item_of_sid: SID codes -> item id, for the catalog the scorer knows.
    """

    def cf(completion_ids: list[list[int]], history: list[list[str]] | None = None, **kwargs) -> list[float]:
        """SASRec probability of the completion's item given the prompt's history; 0.0 if not a catalog item."""
        if history is None:
            raise ValueError(
                "reward 'cf' needs the 'history' column (item ids) in the GRPO data: rebuild it with `align data`"
            )
        items = [item_of_sid.get(vocab.codes(ids)) for ids in completion_ids]
        return scorer.score(history, items).tolist()

    return cf


def load_cf(vocab: SIDVocab, run_dir: str | os.PathLike) -> RewardFunc:
    """The `cf` reward with the run's SASRec model and SID map (<run>/sasrec, <run>/sid/sid_map.json)."""
    from align.run_dir import RunDir, read_json
    from align.sasrec import load_sasrec

    run = RunDir(run_dir)
    if not run.is_done("sasrec"):
        raise FileNotFoundError(f"reward 'cf' needs a SASRec model: run `align baseline --run_dir {run_dir}` first")
    sid_map = read_json(run.require("sid") / "sid_map.json")
    item_of_sid = {tuple(codes): item for item, codes in sid_map["items"].items()}
    return make_cf(vocab, load_sasrec(run.stage("sasrec")), item_of_sid)


# name -> factory(vocab) -> reward function. `cf` also needs the run's SASRec model: make_rewards builds it with
# load_cf(vocab, run_dir).
REWARDS: dict[str, Callable[..., RewardFunc]] = {
    "hit": make_hit,
    "rank": make_rank,
    "prefix": make_prefix,
    "cf": make_cf,
}
# Weight of each reward when none are given: prefix is partial credit, worth less than a hit.
DEFAULT_WEIGHTS: dict[str, float] = {"hit": 1.0, "rank": 1.0, "prefix": 0.5, "cf": 1.0}


def make_rewards(
    names: str | Sequence[str],
    weights: str | Sequence[float] | None,
    vocab: SIDVocab,
    run_dir: str | os.PathLike | None = None,
) -> tuple[list[RewardFunc], list[float]]:
    """Reward functions and their weights from "hit,rank,prefix"-style lists.

    Args:
        names: comma-separated names (or a list) from REWARDS.
        weights: one weight per reward, comma-separated or a list; None = DEFAULT_WEIGHTS (1.0 if unlisted).
        vocab: where the SID tokens sit.
        run_dir: the run directory; needed by `cf`, which loads <run_dir>/sasrec and <run_dir>/sid.

    Returns:
        (reward functions, weights), ready for GRPOTrainer(reward_funcs=...) and GRPOConfig.reward_weights.
    """
    names = [n.strip() for n in names.split(",")] if isinstance(names, str) else [n.strip() for n in names]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"no reward given: pass rewards as a comma-separated list of {', '.join(REWARDS)}")
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}; valid rewards are: {', '.join(REWARDS)}")
    if weights is None:
        values = [DEFAULT_WEIGHTS.get(name, 1.0) for name in names]
    else:
        values = [float(w) for w in (weights.split(",") if isinstance(weights, str) else weights)]
    if len(values) != len(names):
        raise ValueError(f"{len(names)} rewards ({', '.join(names)}) but {len(values)} reward weights {values}")
    if "cf" in names and run_dir is None:
        raise ValueError("reward 'cf' needs the run directory that holds its SASRec model: pass run_dir")
    return [load_cf(vocab, run_dir) if name == "cf" else REWARDS[name](vocab) for name in names], values
