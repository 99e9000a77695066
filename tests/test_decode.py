import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from align.decode.beam import sample_sids, sid_beam_search, topk_items
from align.decode.processor import SIDConstraint
from align.decode.trie import SIDTrie
from align.testing import tiny_causal_lm, tiny_tokenizer
from align.tokens import SIDVocab

VOCAB_SIZE = 96
PAD, EOS = 0, 3
# Three SID levels in one block of token ids, as add_sid_tokens lays them out.
VOCAB = SIDVocab(level_sizes=(6, 5, 4), first_ids=(60, 66, 71))
SID_LO, SID_HI = 60, 75


def peaked(model, scale: float = 8.0):
    """Random weights with a scaled final norm: confident like a trained model, so ranking mistakes show."""
    norm = model.transformer.ln_f if hasattr(model, "transformer") else model.model.norm
    with torch.no_grad():
        for param in norm.parameters():
            param.mul_(scale)
    return model.eval()


def any_causal_lm(arch: str, seed: int):
    """The project's tiny Qwen2 / Llama, or a tiny GPT-2: absolute positions, so left padding must be handled."""
    if arch != "gpt2":
        return tiny_causal_lm(VOCAB_SIZE, arch=arch, seed=seed)
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=2, bos_token_id=EOS, eos_token_id=EOS)
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module")
def catalog() -> tuple[torch.Tensor, SIDTrie]:
    codes = torch.stack([torch.randint(0, s, (70,), generator=torch.Generator().manual_seed(1)) for s in (4, 5, 4)], 1)
    codes = codes.unique(dim=0)  # ~50 items sharing few first-level codes
    return codes, SIDTrie.from_codes(codes, VOCAB.level_sizes)


def left_padded_prompts(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random non-SID prompts of different lengths, left-padded."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros(len(lengths), width, dtype=torch.int64)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(4, SID_LO, (n,), generator=gen)
        mask[row, width - n :] = 1
    return ids, mask


def generate(model, ids, mask, trie, **kwargs):
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        logits_processor=[SIDConstraint(trie, VOCAB, EOS)],
        pad_token_id=PAD,
        eos_token_id=EOS,
        top_k=None,
        top_p=None,
        **kwargs,
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("do_sample", [False, True])
def test_generate_with_constraint_only_spells_catalog_sids(catalog, seed, do_sample):
    codes, trie = catalog
    model = tiny_causal_lm(VOCAB_SIZE, seed=seed).eval()  # random weights: the constraint does all the work
    ids, mask = left_padded_prompts([7, 4, 6], seed=seed)
    beams = {} if do_sample else {"num_beams": 4, "num_return_sequences": 4}
    torch.manual_seed(seed)
    out = generate(model, ids, mask, trie, do_sample=do_sample, max_new_tokens=5, **beams)
    catalog_sids = {tuple(row) for row in codes.tolist()}
    for row in out[:, ids.shape[1] :].tolist():
        assert VOCAB.codes(row) in catalog_sids
        assert row[3] == EOS  # after a whole SID only EOS
    if not do_sample:  # beams are distinct sequences
        assert len({tuple(r) for r in out.tolist()}) == len(out)


def test_constraint_masks_by_hand():
    trie = SIDTrie.from_codes(torch.tensor([[0, 1, 2], [0, 1, 3], [2, 0, 0]]), VOCAB.level_sizes)
    a, b, c = (lambda code, level=level: VOCAB.first_ids[level] + code for level in range(3))
    rows = torch.tensor(
        [
            [5, 6, 7],  # no SID yet -> level-0 codes 0 and 2
            [5, 6, a(0)],  # <a_0> -> <b_1>
            [6, a(0), b(1)],  # <a_0><b_1> -> <c_2>, <c_3>
            [a(2), b(0), c(0)],  # whole SID -> EOS only
            [5, b(1), c(2)],  # not a catalog prefix (starts at level b) -> EOS
        ]
    )
    scores = SIDConstraint(trie, VOCAB, [EOS, 1])(rows, torch.zeros(5, VOCAB_SIZE))
    allowed = [sorted((s > float("-inf")).nonzero()[:, 0].tolist()) for s in scores]
    assert allowed == [[a(0), a(2)], [b(1)], [c(2), c(3)], [1, EOS], [1, EOS]]


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2"])
@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_beam_search_equals_hf_generate(catalog, arch, scale):
    """Same items, same order, same scores as HF beam search + SIDConstraint, left padding, mixed lengths."""
    codes, trie = catalog
    model = peaked(any_causal_lm(arch, seed=3), scale)
    ids, mask = left_padded_prompts([9, 5, 7, 9])
    num_beams = 12
    out = generate(
        model, ids, mask, trie, do_sample=False, num_beams=num_beams, num_return_sequences=num_beams,
        max_new_tokens=VOCAB.levels, length_penalty=0.0, output_scores=True, return_dict_in_generate=True,
    )  # fmt: skip
    ref_ids = out.sequences[:, ids.shape[1] :].view(len(ids), num_beams, -1)
    ref_items = trie.item_index(ref_ids - torch.tensor(VOCAB.first_ids)).view(len(ids), num_beams)

    ours = sid_beam_search(model, ids, mask, trie, VOCAB, num_beams)
    assert torch.equal(ours.items, ref_items)
    torch.testing.assert_close(ours.scores, out.sequences_scores.view(len(ids), num_beams), atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.token_logprobs.sum(-1), ours.scores)
    assert torch.equal(ours.codes, codes[ours.items])


@settings(max_examples=25, deadline=None)
@given(
    levels=st.integers(1, 4),
    num_items=st.integers(1, 30),
    num_beams=st.integers(1, 40),
    k=st.integers(1, 45),
    seed=st.integers(0, 10_000),
)
def test_beam_search_returns_distinct_catalog_items(levels, num_items, num_beams, k, seed):
    gen = torch.Generator().manual_seed(seed)
    sizes = (3, 3, 3, 3)[:levels]  # few codes per level: heavy prefix sharing
    codes = torch.stack([torch.randint(0, s, (num_items,), generator=gen) for s in sizes], 1).unique(dim=0)
    vocab = SIDVocab(sizes, tuple(60 + 3 * level for level in range(levels)))
    trie = SIDTrie.from_codes(codes, sizes)
    ids, mask = left_padded_prompts([5, 3], seed=seed)
    beams = sid_beam_search(_hypothesis_model(), ids, mask, trie, vocab, num_beams, k)

    size = min(k, num_beams)
    assert beams.items.shape == (2, size) and beams.codes.shape == (2, size, levels)
    found = min(size, len(codes))  # K larger than the catalog gives the whole catalog, then padding
    for row in range(2):
        items = beams.items[row, :found]
        assert items.min() >= 0 and len(set(items.tolist())) == found
        assert torch.equal(beams.codes[row, :found], codes[items])
        assert (beams.items[row, found:] == -1).all() and torch.isinf(beams.scores[row, found:]).all()
        assert (beams.scores[row, :found].diff() <= 0).all()


_MODEL = []


def _hypothesis_model():
    """One tiny model for all hypothesis examples (fixtures do not mix with @given)."""
    if not _MODEL:
        _MODEL.append(tiny_causal_lm(VOCAB_SIZE, seed=5).eval())
    return _MODEL[0]


def test_sample_sids_valid_reproducible_and_scored(catalog):
    codes, trie = catalog
    model = tiny_causal_lm(VOCAB_SIZE, seed=2).eval()
    ids, mask = left_padded_prompts([6, 8])
    first = sample_sids(model, ids, mask, trie, VOCAB, 16, generator=torch.Generator().manual_seed(0))
    again = sample_sids(model, ids, mask, trie, VOCAB, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.items, again.items)
    assert first.items.shape == (2, 16) and (first.items >= 0).all()
    assert torch.equal(first.codes, codes[first.items])
    assert (first.scores.diff(dim=1) <= 0).all()
    # Scores are full-vocabulary log-probs at temperature 1: the beam search scores the same SID identically.
    best = sid_beam_search(model, ids, mask, trie, VOCAB, num_beams=len(codes))
    for row in range(2):
        lookup = dict(zip(best.items[row].tolist(), best.scores[row].tolist(), strict=True))
        for item, score in zip(first.items[row].tolist(), first.scores[row].tolist(), strict=True):
            assert score == pytest.approx(lookup[item], abs=1e-4)


def test_sample_sids_follows_the_renormalised_distribution():
    """One level, four allowed codes out of six: frequencies match softmax over the allowed codes only."""
    vocab = SIDVocab((6,), (60,))
    trie = SIDTrie.from_codes(torch.tensor([[0], [2], [3], [5]]), (6,))
    model = peaked(tiny_causal_lm(VOCAB_SIZE, seed=4), 2.0)
    ids, mask = left_padded_prompts([5])
    n = 4000
    drawn = sample_sids(model, ids, mask, trie, vocab, n, temperature=0.7, generator=torch.Generator().manual_seed(1))
    logits = model(input_ids=ids, attention_mask=mask).logits[0, -1, 60:66].detach()
    expected = torch.softmax(logits[[0, 2, 3, 5]] / 0.7, dim=0)
    freq = torch.bincount(drawn.items[0], minlength=4).float() / n
    assert (freq - expected).abs().max() < 4 * math.sqrt(0.25 / n)


def test_topk_items_batches_chat_prompts_in_order(catalog):
    codes, trie = catalog
    tokenizer = tiny_tokenizer(["w" + str(i) for i in range(20)])
    assert len(tokenizer) < SID_LO
    model = tiny_causal_lm(VOCAB_SIZE, seed=6).eval()
    prompts = [[{"role": "user", "content": " ".join(f"w{j}" for j in range(n))}] for n in (5, 1, 9, 3, 7)]
    got = topk_items(model, tokenizer, prompts, trie, VOCAB, k=5, num_beams=8, batch_size=2, progress=False)
    assert got.items.shape == (5, 5)
    for row, messages in enumerate(prompts):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        alone = sid_beam_search(model, ids, torch.ones_like(ids), trie, VOCAB, num_beams=8, k=5)
        assert torch.equal(got.items[row], alone.items[0])
        torch.testing.assert_close(got.scores[row], alone.scores[0], atol=1e-4, rtol=0)
    empty = topk_items(model, tokenizer, [], trie, VOCAB, k=5, progress=False)
    assert empty.items.shape == (0, 5) and empty.codes.shape == (0, 5, 3)


def test_bfloat16_model_decodes_catalog_items(catalog):
    codes, trie = catalog
    model = tiny_causal_lm(VOCAB_SIZE, seed=7).to(torch.bfloat16).eval()
    ids, mask = left_padded_prompts([4, 6])
    beams = sid_beam_search(model, ids, mask, trie, VOCAB, num_beams=6)
    assert beams.scores.dtype == torch.float32 and (beams.items >= 0).all()
    assert all(len(set(row)) == 6 for row in beams.items.tolist())


def test_bad_inputs_raise_clear_errors(catalog):
    _, trie = catalog
    model = tiny_causal_lm(VOCAB_SIZE).eval()
    ids, mask = left_padded_prompts([3, 5])
    with pytest.raises(ValueError, match="left-padded"):
        sid_beam_search(model, ids, mask.flip(1), trie, VOCAB, 4)
    with pytest.raises(ValueError, match="do not fit"):
        sid_beam_search(model, ids, mask, trie, SIDVocab((6, 5), (60, 66)), 4)
    with pytest.raises(ValueError, match="temperature"):
        sample_sids(model, ids, mask, trie, VOCAB, 4, temperature=0.0)


def test_peft_wrapped_model_decodes_like_its_base(catalog):
    from peft import LoraConfig, get_peft_model

    _, trie = catalog
    base = tiny_causal_lm(VOCAB_SIZE, seed=8).eval()
    ids, mask = left_padded_prompts([4, 7])
    expected = sid_beam_search(base, ids, mask, trie, VOCAB, num_beams=6)
    # A fresh LoRA adapter is the identity (B = 0), so only the wrapper's plumbing is under test.
    wrapped = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).eval()
    got = sid_beam_search(wrapped, ids, mask, trie, VOCAB, num_beams=6)
    assert torch.equal(got.items, expected.items)
    torch.testing.assert_close(got.scores, expected.scores)
