import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from align.testing import tiny_causal_lm, tiny_tokenizer
from align.tokens import SIDVocab, add_sid_tokens, format_sid, parse_sid, sid_table


@given(st.lists(st.integers(0, 999), min_size=1, max_size=6))
def test_format_parse_round_trip(codes):
    assert parse_sid(format_sid(codes)) == tuple(codes)
    assert parse_sid(format_sid(codes), levels=len(codes) + 1) is None


@pytest.mark.parametrize("text", ["", "<b_1><a_2>", "<a_1> junk", "<a_1><c_2>", "<a_x>", "<a_1><b_2", "x<a_1>"])
def test_parse_rejects_malformed(text):
    assert parse_sid(text) is None


def test_add_sid_tokens_contiguous_ids_and_informed_init():
    tok = tiny_tokenizer(["espresso", "beans", "camera", "lens"])
    model = tiny_causal_lm(len(tok))
    rows_before = model.get_input_embeddings().weight.shape[0]
    emb_before = model.get_input_embeddings().weight.detach().clone()
    vocab = add_sid_tokens(model, tok, [3, 2], code_texts=[{0: ["espresso beans"], 1: ["camera lens"]}, {}])
    assert vocab.level_sizes == (3, 2)
    assert vocab.first_ids[1] == vocab.first_ids[0] + 3
    assert len(tok) == rows_before + 5 == model.get_input_embeddings().weight.shape[0]
    # Normal tokens, one id each, not special: TRL's skip_special_tokens must keep them.
    assert tok("<a_2><b_1>", add_special_tokens=False)["input_ids"] == vocab.ids((2, 1))
    assert tok.decode(vocab.ids((2, 1)), skip_special_tokens=True).replace(" ", "") == "<a_2><b_1>"
    weight = model.get_input_embeddings().weight.detach()
    ids = tok(["espresso beans"], add_special_tokens=False)["input_ids"][0]
    assert torch.allclose(weight[vocab.first_ids[0]], emb_before[ids].mean(0), atol=1e-6)
    # Codes without texts are not left at zero or copies of one another.
    assert not torch.allclose(weight[vocab.first_ids[1]], weight[vocab.first_ids[1] + 1])
    assert torch.equal(weight[:rows_before], emb_before)


def test_add_sid_tokens_never_shrinks_padded_embeddings():
    tok = tiny_tokenizer()
    model = tiny_causal_lm(len(tok) + 50)  # more rows than tokens, like Qwen2.5 checkpoints
    vocab = add_sid_tokens(model, tok, [4, 4])
    assert model.get_input_embeddings().weight.shape[0] == len(tok) - 8 + 50
    assert max(vocab.all_ids()) < model.get_input_embeddings().weight.shape[0]


def test_vocab_codes_and_reload_from_tokenizer():
    tok = tiny_tokenizer()
    vocab = add_sid_tokens(tiny_causal_lm(len(tok)), tok, [4, 3, 2])
    assert vocab.codes(vocab.ids((3, 0, 1)) + [0]) == (3, 0, 1)
    assert vocab.codes(vocab.ids((3, 0, 1))[:2]) is None
    assert vocab.codes([vocab.first_ids[1], vocab.first_ids[1], vocab.first_ids[2]]) is None  # wrong level order
    assert SIDVocab.from_tokenizer(tok, [4, 3, 2]) == vocab
    assert SIDVocab.from_dict(vocab.to_dict()) == vocab
    with pytest.raises(ValueError, match="already has SID tokens"):
        add_sid_tokens(tiny_causal_lm(len(tok)), tok, [4, 3, 2])
    with pytest.raises(ValueError, match="no contiguous block"):
        SIDVocab.from_tokenizer(tiny_tokenizer(), [2])


def test_sid_table_keeps_order():
    ids, codes = sid_table({"levels": 2, "level_sizes": [3, 2], "items": {"x": [2, 1], "y": [0, 0]}})
    assert ids == ["x", "y"] and codes.tolist() == [[2, 1], [0, 0]]
