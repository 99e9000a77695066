import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import catalog, make_base_model, make_run, sid_map

from align.config import parse_args
from align.decode.trie import SIDTrie
from align.models import load_for_training, save_checkpoint
from align.run_dir import MANIFEST, write_manifest
from align.train import grpo
from align.train.grpo import RLArgs, copy_sid_rows_to_ref, make_rollout_func
from align.train.lora import LoraArgs, add_lora, lora_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

RECIPE = Path(__file__).parents[1] / "recipes" / "cpu_demo" / "rl.yaml"
CATALOG_SIDS = {tuple(codes) for codes in sid_map()["items"].values()}


@pytest.fixture
def run_with_sft(tmp_path) -> Path:
    """A run whose sft/ holds a fresh (untrained) adapter: what GRPO starts from."""
    run_dir = make_run(tmp_path / "run")
    base = make_base_model(tmp_path / "base")
    model, tokenizer, vocab = load_for_training(base, sid_map(), catalog())
    model = add_lora(model, LoraArgs(lora_r=4, lora_alpha=8), vocab)
    save_checkpoint(model, tokenizer, run_dir / "sft", sid_map(), str(base), vocab)
    write_manifest(run_dir / "sft", "sft", started=time.time())
    return run_dir


def grpo_config(**overrides):
    from trl import GRPOConfig

    options = dict(
        output_dir="ignored",
        max_steps=2,
        learning_rate=1e-2,
        per_device_train_batch_size=4,
        num_generations=4,
        beta=0.04,
        logging_steps=1,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    return GRPOConfig(**{**options, **overrides})


@pytest.mark.parametrize("rollout", ["beam", "sample"])
def test_grpo_steps_change_the_adapter_with_catalog_rollouts(run_with_sft, monkeypatch, rollout):
    rollouts = []

    def spy_make_rollout_func(*args):
        real = make_rollout_func(*args)

        def rollout_func(prompts, trainer):
            out = real(prompts, trainer)
            rollouts.append((prompts, out, trainer.processing_class.eos_token_id))
            return out

        return rollout_func

    monkeypatch.setattr(grpo, "make_rollout_func", spy_make_rollout_func)
    out = grpo.run(RLArgs(run_dir=str(run_with_sft), rollout=rollout), grpo_config())

    assert len(rollouts) == 2  # one generation per step
    vocab = SimpleNamespace(first_ids=(25, 28))  # the tiny tokenizer has 25 tokens; SID tokens follow
    for prompts, result, eos in rollouts:
        n = len(prompts)
        assert n == 4 and all(
            len(result[key]) == n for key in ("prompt_ids", "completion_ids", "logprobs", "beam_rank")
        )
        for ids, logprobs in zip(result["completion_ids"], result["logprobs"], strict=True):
            codes = (ids[0] - vocab.first_ids[0], ids[1] - vocab.first_ids[1])
            assert codes in CATALOG_SIDS and ids[2:] == [eos] and len(logprobs) == 3
            assert all(lp <= 0.0 for lp in logprobs) and logprobs[-1] == 0.0
        assert result["beam_rank"] == [0, 1, 2, 3]  # one prompt per step here: one group, best first
        if rollout == "beam":  # the group is 4 distinct items
            assert len({tuple(ids) for ids in result["completion_ids"]}) == 4

    before, after = (
        load_file(run_with_sft / "sft" / "adapter_model.safetensors"),
        load_file(out / "adapter_model.safetensors"),
    )
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((out / MANIFEST).read_text())["stage"] == "rl"


def test_positive_advantages_reinforce_without_pushing_down(run_with_sft, monkeypatch):
    seen = []
    real = grpo.positive_advantage_trainer

    def spy_trainer():
        class Spy(real()):
            def _generate_and_score_completions(self, inputs):
                batch = super()._generate_and_score_completions(inputs)
                seen.append(batch["advantages"].clone())
                return batch

        return Spy

    monkeypatch.setattr(grpo, "positive_advantage_trainer", spy_trainer)
    # With the target in every group, hit + rank rewards it and penalises the other beams: centred advantages
    # would be negative for those.
    args = RLArgs(run_dir=str(run_with_sft), rewards="hit,rank", inject_target=True, positive_advantages=True)
    out = grpo.run(args, grpo_config())
    advantages = torch.cat(seen)
    assert len(seen) == 2 and (advantages >= 0).all() and (advantages > 0).any() and (advantages == 0).any()
    assert (out / "adapter_model.safetensors").is_file()


def test_a_reward_that_cannot_load_leaves_a_finished_rl_stage_alone(run_with_sft):
    (run_with_sft / "rl").mkdir()
    write_manifest(run_with_sft / "rl", "rl", started=time.time())
    with pytest.raises(FileNotFoundError, match="needs a SASRec model"):
        grpo.run(RLArgs(run_dir=str(run_with_sft), rewards="hit,cf"), grpo_config())
    assert (run_with_sft / "rl" / MANIFEST).is_file()


def test_rollout_func_returns_each_prompt_its_group(run_with_sft):
    from accelerate import Accelerator

    from align.models import load_checkpoint

    model, tokenizer, vocab, sids = load_checkpoint(run_with_sft / "sft", merge=False, trainable=True)
    trie = SIDTrie.from_codes(torch.tensor(list(sids["items"].values())), vocab.level_sizes)
    accelerator = Accelerator(cpu=True)
    trainer = SimpleNamespace(
        model=model,
        model_wrapped=model,
        accelerator=accelerator,
        num_generations=3,
        num_generations_eval=3,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None, temperature=1.0),
    )
    p1, p2 = ([{"role": "user", "content": f"item {t} ?"}] for t in ("red hat", "blue cup"))
    prompts = [p1] * 3 + [p2] * 3

    out = make_rollout_func(trie, vocab, tokenizer, "beam")(prompts, trainer)
    assert out["beam_rank"] == [0, 1, 2] * 2
    assert out["prompt_ids"][0] == out["prompt_ids"][2] != out["prompt_ids"][3]
    assert all(vocab.codes(ids) in CATALOG_SIDS for ids in out["completion_ids"])
    assert model.training  # the rollout ran in eval mode and restored train mode

    sampled = make_rollout_func(trie, vocab, tokenizer, "sample")(prompts[:5], trainer)  # a partial group is fine
    assert sampled["beam_rank"] == [0, 1, 2, 0, 1]
    with pytest.raises(ValueError, match="multiple of num_generations"):
        make_rollout_func(trie, vocab, tokenizer, "beam")(prompts[:5], trainer)


def test_injected_target_takes_the_last_slot_of_a_group_that_misses_it(run_with_sft):
    from accelerate import Accelerator

    from align.models import load_checkpoint
    from align.train.grpo import prompt_key, target_codes

    model, tokenizer, vocab, sids = load_checkpoint(run_with_sft / "sft", merge=False, trainable=True)
    model.eval()
    trie = SIDTrie.from_codes(torch.tensor(list(sids["items"].values())), vocab.level_sizes)
    trainer = SimpleNamespace(model=model, model_wrapped=model, accelerator=Accelerator(cpu=True), num_generations=3,
                              num_generations_eval=3, args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    p1, p2 = ([{"role": "user", "content": f"item {t} ?"}] for t in ("red hat", "blue cup"))
    plain = make_rollout_func(trie, vocab, tokenizer, "beam")([p1] * 3 + [p2] * 3, trainer)
    found = [tuple(vocab.codes(ids)) for ids in plain["completion_ids"]]
    absent = next(codes for codes in sorted(CATALOG_SIDS) if codes not in found[:3])
    rows = [{"prompt": p1, "target": "".join(f"<{'ab'[i]}_{c}>" for i, c in enumerate(absent))},
            {"prompt": p2, "target": "".join(f"<{'ab'[i]}_{c}>" for i, c in enumerate(found[4]))}]
    targets = target_codes(rows, vocab)
    assert targets == {prompt_key(p1): absent, prompt_key(p2): found[4]}
    # a prompt seen with two targets is ambiguous: no injection for it
    assert prompt_key(p2) not in target_codes([*rows, {"prompt": p2, "target": "<a_0><b_0>"}], vocab)

    out = make_rollout_func(trie, vocab, tokenizer, "beam", targets)([p1] * 3 + [p2] * 3, trainer)
    got = [tuple(vocab.codes(ids)) for ids in out["completion_ids"]]
    assert got[:2] == found[:2] and got[2] == absent  # p1 missed its target: it replaces the last beam
    assert got[3:] == found[3:] and out["logprobs"][3:] == plain["logprobs"][3:]  # p2 found its target: unchanged
    assert out["beam_rank"] == [0, 1, 2] * 2 and out["completion_ids"][2][-1] == tokenizer.eos_token_id
    # the injected completion's log-probs are the policy's, teacher-forced after the prompt
    prompt_ids = torch.tensor([out["prompt_ids"][2] + vocab.ids(absent)])
    with torch.no_grad():
        logits = model(input_ids=prompt_ids).logits[0, -3:-1].log_softmax(-1)
    expected = logits.gather(-1, torch.tensor(vocab.ids(absent))[:, None]).squeeze(-1).tolist()
    assert out["logprobs"][2][:2] == pytest.approx(expected, abs=1e-5) and out["logprobs"][2][2] == 0.0


def test_ref_adapter_gets_the_policy_sid_rows(tmp_path):
    base = make_base_model(tmp_path)
    model, _, vocab = load_for_training(base, sid_map(), catalog())
    config = lora_config(LoraArgs(), model, vocab)
    model = add_lora(model, LoraArgs(), vocab)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "trainable_tokens_delta" in name:
                param.add_(1.0)  # the policy's SID rows differ from the base rows
    model.add_adapter("ref", config)  # what GRPOTrainer does for beta > 0 (it copies only ".default." names)
    copy_sid_rows_to_ref(model)
    params = dict(model.named_parameters())
    rows = [name for name in params if "trainable_tokens_delta" in name and name.endswith(".default")]
    assert rows and all(torch.equal(params[n], params[n.removesuffix("default") + "ref"]) for n in rows)


def test_rl_args_validate_choices(run_with_sft):
    with pytest.raises(ValueError, match="rollout must be one of beam, sample"):
        RLArgs(run_dir="x", rollout="greedy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        grpo.run(RLArgs(run_dir=str(run_with_sft), init=str(run_with_sft / "nope")), grpo_config())
    with pytest.raises(ValueError, match="unknown reward 'ndcg'"):
        grpo.run(RLArgs(run_dir=str(run_with_sft), rewards="hit,ndcg"), grpo_config())


def test_cpu_demo_recipe_parses():
    from trl import GRPOConfig

    args, config = parse_args((RLArgs, GRPOConfig), ["--config", str(RECIPE)], prog="align rl", doc=grpo.__doc__)
    assert args.rollout == "beam" and args.init == "sft" and not config.bf16
    assert len(config.reward_weights) == len(args.rewards.split(","))
    assert config.per_device_train_batch_size % config.num_generations == 0
    assert "align rl recipes/cpu_demo/rl.yaml" in RECIPE.read_text().split("\n\n")[0]
