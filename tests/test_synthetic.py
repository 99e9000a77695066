import time
from collections import Counter, defaultdict

import pytest

from align.data.prepare import leave_one_out
from align.data.synthetic import Mixture, make_demo_data


def splits_of(interactions):
    sequences = defaultdict(list)
    for user, item, _ in interactions:
        sequences[user].append(item)
    return leave_one_out(dict(sequences), max_history=10)


def hit_rates_at_10(interactions) -> tuple[float, float]:
    """HR@10 on the leave-one-out test split of popularity and of first-order transition counts."""
    splits = splits_of(interactions)
    seen = splits["train"] + splits["valid"]
    popularity = Counter(row["target"] for row in seen)
    popular = [item for item, _ in popularity.most_common(10)]
    follows = defaultdict(Counter)
    for row in seen:
        follows[row["history"][-1]][row["target"]] += 1
    pop_hits = markov_hits = 0
    for row in splits["test"]:
        after = [item for item, _ in follows[row["history"][-1]].most_common(10)]
        ranked = (after + [item for item in popular if item not in after])[:10]
        markov_hits += row["target"] in ranked
        pop_hits += row["target"] in popular
    n = len(splits["test"])
    return pop_hits / n, markov_hits / n


def test_deterministic_for_a_seed_and_different_across_seeds():
    first = make_demo_data(n_items=120, n_users=50, seed=3)
    assert make_demo_data(n_items=120, n_users=50, seed=3) == first
    assert make_demo_data(n_items=120, n_users=50, seed=4) != first


def test_shape_of_the_demo_data():
    started = time.perf_counter()
    items, interactions = make_demo_data(min_len=5, max_len=12)
    assert time.perf_counter() - started < 1.0
    assert len(items) == 300
    assert len({item.item_id for item in items}) == len({item.title for item in items}) == 300
    assert all(item.title and item.description and item.brand and " > " in item.categories for item in items)
    assert len({item.categories.split(" > ")[0] for item in items}) == 8
    by_user = defaultdict(list)
    for user, item, timestamp in interactions:
        by_user[user].append((item, timestamp))
    assert len(by_user) == 800
    assert all(5 <= len(events) <= 12 for events in by_user.values())
    assert all([t for _, t in events] == sorted(t for _, t in events) for events in by_user.values())
    assert {item for _, item, _ in interactions} <= {item.item_id for item in items}


def test_history_predicts_the_next_item_far_better_than_popularity():
    pop, markov = hit_rates_at_10(make_demo_data()[1])
    assert markov >= 3 * pop, (pop, markov)
    assert markov > 0.3


@pytest.mark.parametrize("seed", [1, 2])
def test_the_mixture_controls_the_signal(seed):
    # Only popularity draws: the last item says nothing, so transitions cannot beat popularity by much.
    _, interactions = make_demo_data(n_users=800, seed=seed, mixture=Mixture(0, 0, 0, 1))
    pop, markov = hit_rates_at_10(interactions)
    assert markov < 1.5 * pop, (pop, markov)
    # Only series continuation where possible: a book volume is always followed by the next volume.
    items, interactions = make_demo_data(n_users=200, seed=seed, mixture=Mixture(1, 0, 0, 0))
    title = {item.item_id: item.title for item in items}
    pairs = [(title[a], title[b]) for a, b in zip(interactions, interactions[1:], strict=False) if a[0] == b[0]
             for a, b in [(a[1], b[1])]]
    book_pairs = [(a, b) for a, b in pairs if ", Book " in a and ", Book 5" not in a]
    assert book_pairs
    for a, b in book_pairs:
        series, volume = a.split(", Book ")
        if b.startswith(series):  # lines may be cut short before volume 5; otherwise the next volume follows
            assert b.startswith(f"{series}, Book {int(volume[0]) + 1}")
