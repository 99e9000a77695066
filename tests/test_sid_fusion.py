"""Behaviour fusion: the user-item matrix by hand, co-bought items end up close, the weighting identity."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from align.run_dir import write_jsonl
from align.sid.fusion import behaviour_vectors, fuse, fuse_behaviour, user_item_matrix

ITEMS = ["a", "b", "c", "d", "e"]


def write_train(path, rows):
    write_jsonl(path, [{"user_id": u, "history": h, "target": t} for u, h, t in rows])
    return path


def test_user_item_matrix_by_hand(tmp_path):
    train = write_train(tmp_path / "train.jsonl", [("u1", ["a"], "b"), ("u1", ["a", "b"], "c"), ("u2", [], "d"),
                                                   ("u2", ["d", "zz"], "d")])  # fmt: skip
    matrix = user_item_matrix(train, ITEMS).to_dense()
    third, one = 1 / np.sqrt(3), 1.0
    np.testing.assert_allclose(matrix.numpy(), [[third, third, third, 0, 0], [0, 0, 0, one, 0]], rtol=1e-6)


def test_items_bought_together_get_close_behaviour_vectors(tmp_path):
    # a, b, c are bought together; d, e together; nobody buys both groups. Items 5.. are never bought.
    rows = [(f"u{i}", ["a", "b"], "c") for i in range(5)] + [(f"v{i}", ["d"], "e") for i in range(5)]
    train = write_train(tmp_path / "train.jsonl", rows)
    vectors = behaviour_vectors(user_item_matrix(train, [*ITEMS, "never"]), dim=4)
    assert vectors.shape == (6, 4)
    cosine = vectors @ vectors.T
    assert cosine[0, 1] > 0.99 and cosine[3, 4] > 0.99 and abs(float(cosine[0, 3])) < 0.01
    assert float(vectors[5].norm()) == 0.0
    torch.testing.assert_close(vectors, behaviour_vectors(user_item_matrix(train, [*ITEMS, "never"]), dim=4))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), weight=st.floats(0.0, 1.0))
def test_fused_cosine_is_the_weighted_mix_of_the_two(seed, weight):
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(4, 6))
    behaviour = rng.normal(size=(4, 3))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    behaviour /= np.linalg.norm(behaviour, axis=1, keepdims=True)
    fused = fuse(text, behaviour, weight)
    assert fused.shape == (4, 9) and fused.dtype == np.float32
    np.testing.assert_allclose(fused @ fused.T, (1 - weight) * text @ text.T + weight * behaviour @ behaviour.T,
                               atol=1e-5)  # fmt: skip


def test_zero_weight_leaves_text_as_is_and_bad_input_is_named(tmp_path):
    text = np.eye(5, dtype=np.float32)
    assert fuse_behaviour(text, tmp_path / "missing.jsonl", ITEMS, 0.0) is text
    with pytest.raises(ValueError, match=r"behaviour_weight must be in \[0, 1\]"):
        fuse(text, text, 1.5)
    train = write_train(tmp_path / "train.jsonl", [("u", ["x"], "y")])
    with pytest.raises(ValueError, match="no interaction with a catalog item"):
        fuse_behaviour(text, train, ITEMS, 0.5)
