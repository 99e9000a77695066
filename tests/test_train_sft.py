import json
from pathlib import Path

import pytest
import torch
from tiny_run import catalog, make_base_model, make_run, sid_map

from align.config import parse_args
from align.models import load_checkpoint, load_for_training
from align.run_dir import MANIFEST, read_jsonl
from align.tokens import parse_sid
from align.train import sft
from align.train.sft import SFTArgs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

RECIPE = Path(__file__).parents[1] / "recipes" / "cpu_demo" / "sft.yaml"


def sft_config(out: Path, **overrides):
    from trl import SFTConfig

    options = dict(
        output_dir=str(out),
        max_steps=30,
        learning_rate=1e-2,
        per_device_train_batch_size=8,
        logging_steps=5,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    return SFTConfig(**{**options, **overrides})


def completion_nll(model, tokenizer, vocab, rows) -> float:
    """Mean negative log-likelihood of the target SID tokens + EOS after each prompt (teacher forcing)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            target = [*vocab.ids(sid_map()["items"][row["target_item"]]), tokenizer.eos_token_id]
            ids = torch.tensor([prompt_ids + target])
            logprobs = model(ids).logits[0, len(prompt_ids) - 1 : -1].log_softmax(-1)
            total -= logprobs[torch.arange(len(target)), torch.tensor(target)].sum().item()
            count += len(target)
    return total / count


@pytest.mark.parametrize("tied", [True, False])
def test_sft_learns_trains_sid_rows_and_reloads_identically(tmp_path, monkeypatch, tied):
    run_dir = make_run(tmp_path / "run")
    base = make_base_model(tmp_path / "base", tied=tied)
    rows = read_jsonl(run_dir / "data" / "grpo.jsonl")
    start, tokenizer, vocab = load_for_training(base, sid_map(), catalog())
    start.eval()

    # Spy on the save: keep the logits of the trained in-memory model to compare with the reloaded checkpoint.
    probe = torch.tensor([[2, 5, 7, vocab.first_ids[0] + 1, vocab.first_ids[1] + 2]])
    trained = {}
    real_save = sft.save_checkpoint

    def spy_save(trainer, *args, **kwargs):
        model = trainer.accelerator.unwrap_model(trainer.model).eval()
        trained["logits"] = model(probe).logits.detach()
        trained["example"] = trainer.train_dataset[0]
        return real_save(trainer, *args, **kwargs)

    monkeypatch.setattr(sft, "save_checkpoint", spy_save)
    args = SFTArgs(run_dir=str(run_dir), model_name_or_path=str(base), lora_r=4, lora_alpha=8, model_dtype="float32")
    out = sft.run(args, sft_config(tmp_path / "ignored"))

    assert out == run_dir / "sft"
    # The checkpoint carries what recommend/chat need: titles and the training prompt.
    assert (out / "items.jsonl").is_file() and (out / "prompting.json").is_file()
    model, tokenizer2, vocab2, _ = load_checkpoint(out)
    torch.testing.assert_close(model(probe).logits, trained["logits"], atol=1e-5, rtol=1e-5)
    assert vocab2 == vocab
    # Loss on the completion only (TRL's default for prompt-completion rows): the SID tokens, then <|im_end|>.
    example = trained["example"]
    learned = [label for label in example["labels"] if label != -100]
    target = parse_sid(example["completion"][0]["content"])
    assert learned == example["input_ids"][-len(learned) :] == [*vocab.ids(target), tokenizer.eos_token_id]
    # It learned: the SIDs of the training prompts became much more likely.
    before, after = completion_nll(start, tokenizer, vocab, rows), completion_nll(model, tokenizer2, vocab, rows)
    assert after < 0.7 * before, (before, after)
    # The SID rows trained (in and, when untied, out); the base rows did not.
    sid = torch.tensor(vocab.all_ids())
    for get in ("get_input_embeddings", "get_output_embeddings"):
        old, new = getattr(start, get)().weight, getattr(model, get)().weight
        assert not torch.allclose(new[sid], old[sid])
        assert torch.equal(new[: vocab.first_ids[0]], old[: vocab.first_ids[0]])
    # The manifest is written last and names the stage.
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["stage"] == "sft" and manifest["config"][0]["run_dir"] == str(run_dir)
    assert (out / MANIFEST).stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in out.iterdir())
    info = json.loads((out / "model_info.json").read_text())
    assert info == {"base_model": str(base.resolve()), "sid_vocab": vocab.to_dict()}


def test_frozen_sid_rows_stay_put(tmp_path):
    run_dir = make_run(tmp_path / "run", sft_repeat=1)
    base = make_base_model(tmp_path / "base")
    start, _, vocab = load_for_training(base, sid_map(), catalog())
    args = SFTArgs(run_dir=str(run_dir), model_name_or_path=str(base), train_sid_embeddings=False)
    sft.run(args, sft_config(tmp_path, max_steps=3))
    model, *_ = load_checkpoint(run_dir / "sft")
    sid = torch.tensor(vocab.all_ids())
    torch.testing.assert_close(model.get_input_embeddings().weight[sid], start.get_input_embeddings().weight[sid])


def test_init_continues_a_checkpoint_and_refuses_its_own_output_or_other_sids(tmp_path):
    import shutil

    run_dir = make_run(tmp_path / "run")
    base = make_base_model(tmp_path / "base")
    args = SFTArgs(run_dir=str(run_dir), model_name_or_path=str(base), lora_r=4, lora_alpha=8)
    first = sft.run(args, sft_config(tmp_path, max_steps=3))
    shutil.copytree(first, tmp_path / "start")
    rows = read_jsonl(run_dir / "data" / "grpo.jsonl")
    start, tokenizer, vocab, _ = load_checkpoint(tmp_path / "start")

    with pytest.raises(ValueError, match="this run's own sft/"):
        sft.run(SFTArgs(run_dir=str(run_dir), init=str(first)), sft_config(tmp_path))
    assert (first / MANIFEST).is_file()  # refused before anything was touched

    # Without a step size the result is the checkpoint itself (a fresh LoRA would give the base model's logits).
    probe = torch.tensor([[2, 5, 7, vocab.first_ids[0] + 1, vocab.first_ids[1] + 2]])
    same = sft.run(SFTArgs(run_dir=str(run_dir), init=str(tmp_path / "start")),
                   sft_config(tmp_path, max_steps=1, learning_rate=0.0))
    torch.testing.assert_close(load_checkpoint(same)[0](probe).logits, start(probe).logits, atol=1e-5, rtol=1e-5)

    out = sft.run(SFTArgs(run_dir=str(run_dir), init=str(tmp_path / "start")), sft_config(tmp_path, max_steps=20))
    model, *_ = load_checkpoint(out)
    assert json.loads((out / "model_info.json").read_text())["base_model"] == str(base.resolve())
    before, after = completion_nll(start, tokenizer, vocab, rows), completion_nll(model, tokenizer, vocab, rows)
    assert after < 0.9 * before, (before, after)  # it went on learning from where the checkpoint was

    other = json.loads((run_dir / "sid" / "sid_map.json").read_text())
    other["items"] = dict(zip(other["items"], reversed(list(other["items"].values())), strict=True))
    (run_dir / "sid" / "sid_map.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="trained on other SIDs"):
        sft.run(SFTArgs(run_dir=str(run_dir), init=str(tmp_path / "start")), sft_config(tmp_path))
    assert (out / MANIFEST).is_file()  # the finished stage is left as it was


def test_sft_needs_the_earlier_stages(tmp_path):
    run_dir = make_run(tmp_path / "run")
    (run_dir / "data" / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="run `align data --run_dir"):
        sft.run(SFTArgs(run_dir=str(run_dir)), sft_config(tmp_path))


def test_sft_rejects_rows_without_completion(tmp_path):
    run_dir = make_run(tmp_path / "run")
    (run_dir / "data" / "sft.jsonl").write_text('{"prompt": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(ValueError, match=r"sft.jsonl, line 1: no 'completion' field"):
        sft.run(SFTArgs(run_dir=str(run_dir)), sft_config(tmp_path))


def test_cpu_demo_recipe_parses():
    from trl import SFTConfig

    args, config = parse_args((SFTArgs, SFTConfig), ["--config", str(RECIPE)], prog="align sft", doc=sft.__doc__)
    assert args.run_dir and config.max_steps > 0 and not config.bf16 and config.report_to in ([], "none", ["none"])
    assert "recipes/cpu_demo/sft.yaml" in RECIPE.read_text().split("\n\n")[0]  # the header names its command
