"""Counting baselines, measured in the same run and on the same split as the model.

Both learn only from the rows a model may train on for the split being scored: for the test split, the train rows
plus the validation rows (the validation target is training data for the test run); for the validation split, the
train rows alone.

- popularity: items ranked by how often they are a target in those rows.
- transitions: first-order "what followed this item before": counts of (last history item -> target), ties and
  unseen items filled from popularity.
"""

from collections import Counter, defaultdict
from collections.abc import Sequence

BASELINES = ("popularity", "transitions")


def popularity_ranking(train_rows: Sequence[dict], k: int) -> list[str]:
    counts = Counter(row["target"] for row in train_rows)
    return [item for item, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def popularity(train_rows: Sequence[dict], eval_rows: Sequence[dict], k: int) -> list[list[str]]:
    """The same top-k most frequent items for every evaluated row."""
    top = popularity_ranking(train_rows, k)
    return [list(top) for _ in eval_rows]


def transitions(train_rows: Sequence[dict], eval_rows: Sequence[dict], k: int) -> list[list[str]]:
    """Rank the items that followed the row's last history item most often, then fill with popular items."""
    follows: dict[str, Counter] = defaultdict(Counter)
    for row in train_rows:
        if row["history"]:
            follows[row["history"][-1]][row["target"]] += 1
    fill = popularity_ranking(train_rows, k)
    ranked = []
    for row in eval_rows:
        seen = follows.get(row["history"][-1]) if row["history"] else None
        top = [item for item, _ in sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))[:k]] if seen else []
        top += [item for item in fill if item not in top][: k - len(top)]
        ranked.append(top)
    return ranked


def rank_baseline(name: str, train_rows: Sequence[dict], eval_rows: Sequence[dict], k: int) -> list[list[str]]:
    if name == "popularity":
        return popularity(train_rows, eval_rows, k)
    if name == "transitions":
        return transitions(train_rows, eval_rows, k)
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
