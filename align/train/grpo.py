"""GRPO on SID recommendations: constrained rollouts over the catalog and ranking rewards (TRL GRPOTrainer).

Reads <run_dir>/sid, <run_dir>/catalog, <run_dir>/data/grpo.jsonl and the starting checkpoint (<run_dir>/sft by
default); writes <run_dir>/rl like `align sft` writes sft/ (manifest.json last). Every option of trl.GRPOConfig is
accepted too (num_generations, beta, loss_type, reward_weights, ...); output_dir is always <run_dir>/rl.

Rollouts go through TRL's public `rollout_func` hook. With `rollout: beam`, the G = num_generations completions of a
prompt are the G best catalog SIDs of a constrained beam search (MiniOneRec's setting: a group of distinct items,
ranked); with `rollout: sample` they are G constrained samples at GRPOConfig.temperature, ranked by likelihood.
Each completion is the SID tokens plus EOS. Beam mode needs whole groups on each process:
per_device_train_batch_size * steps_per_generation must be a multiple of num_generations.

    align rl recipes/cpu_demo/rl.yaml
    align rl --run_dir runs/x --rewards hit,rank --reward_weights 1.0 1.0 --max_steps 100
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m align.cli rl RECIPE.yaml
"""

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from align.config import parse_args
from align.models import DEFAULT_MODEL, load_for_training, model_reference, save_checkpoint
from align.run_dir import MANIFEST, RunDir, read_json, write_manifest
from align.tokens import SIDVocab, parse_sid
from align.train.lora import LoraArgs, add_lora, continue_from
from align.train.rewards import REWARDS, make_rewards
from align.train.sft import load_run_inputs, read_rows
from align.train.speed import score_labelled_positions_only

logger = logging.getLogger(__name__)

ROLLOUTS = ("beam", "sample")


@dataclass(kw_only=True)
class RLArgs(LoraArgs):
    run_dir: str = field(metadata={"help": "Run directory: reads catalog/, sid/, data/ and sft/, writes rl/."})
    init: str = field(
        default="sft",
        metadata={
            "help": "Starting point: sft (this run's sft/ checkpoint), base (a fresh LoRA on model_name_or_path, "
            "with the lora_* options), or the folder / Hub id of an align checkpoint."
        },
    )
    model_name_or_path: str = field(default=DEFAULT_MODEL, metadata={"help": "Base causal LM when init is base."})
    rewards: str = field(
        default="hit,rank,prefix",
        metadata={
            "help": f"Comma-separated rewards from {', '.join(REWARDS)}; weights: reward_weights "
            "(default hit 1.0, rank 1.0, prefix 0.5)."
        },
    )
    rollout: str = field(
        default="beam",
        metadata={"help": "beam: the group is the top-G constrained beams; sample: G constrained samples."},
    )
    inject_target: bool = field(
        default=False,
        metadata={
            "help": "When a group misses the prompt's target item, the target replaces the group's last completion "
            "(off-policy guidance, as in LUFFY): every group then holds a positive example and pushes the target "
            "above the policy's own wrong guesses. Off: pure on-policy groups."
        },
    )
    positive_advantages: bool = field(
        default=False,
        metadata={
            "help": "Clamp advantages at 0: completions better than their group's mean are reinforced and worse ones "
            "are left alone instead of pushed down (filtered self-imitation, as in RAFT). Pushing down the policy's "
            "own top beams moves their probability to arbitrary items, which small budgets cannot undo."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"rollout must be one of {', '.join(ROLLOUTS)}, got {self.rollout!r}")


def make_rollout_func(trie, vocab: SIDVocab, tokenizer, mode: str = "beam", targets: dict | None = None):
    """A TRL `rollout_func(prompts, trainer)` that decodes catalog SIDs with the current policy.

    TRL passes this process's prompts, each repeated once per completion it expects (runs of identical
    prompts, num_generations long). Each distinct prompt is decoded once and its run gets the group.
    With `targets` ({prompt_key(prompt): target SID codes}), a group without its prompt's target gets the target
    in place of its last completion (see RLArgs.inject_target); prompts not in `targets` are left as decoded.

    Returns:
        rollout_func returning, per completion: "prompt_ids", "completion_ids" (SID token ids + EOS),
        "logprobs" (the policy's per-token log-probs over the full vocabulary; 0.0 for the EOS, which the
        constraint forces: TRL uses these only for vLLM importance sampling and off-policy masking) and
        "beam_rank" (0 = best beam, or most likely sample), which reaches the rewards as a keyword.
    """
    import torch

    from align.decode.beam import sample_sids, sid_beam_search

    if mode not in ROLLOUTS:
        raise ValueError(f"rollout must be one of {', '.join(ROLLOUTS)}, got {mode!r}")
    first_ids = torch.tensor(vocab.first_ids)
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id

    def rollout_func(prompts: list, trainer) -> dict[str, list]:
        from trl.models import unwrap_model_for_generation

        group = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        runs = _runs(prompts)
        if mode == "beam" and any(count % group for _, count in runs):
            raise ValueError(
                f"beam rollouts need whole groups of num_generations={group} completions per prompt on each "
                "process: make per_device_train_batch_size * steps_per_generation a multiple of num_generations"
            )
        width = group if mode == "beam" else max(count for _, count in runs)
        prompt_ids = [
            tokenizer(
                tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                add_special_tokens=False,
            )["input_ids"]
            for prompt, _ in runs
        ]
        input_ids, attention_mask = _left_pad(prompt_ids, pad_id, trainer.accelerator.device)
        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model:
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    if mode == "beam":
                        beams = sid_beam_search(
                            model, input_ids, attention_mask, trie, vocab, num_beams=group, k=group
                        )
                    else:
                        beams = sample_sids(
                            model, input_ids, attention_mask, trie, vocab, width, temperature=trainer.args.temperature
                        )
            finally:
                model.train(was_training)

        valid = (beams.items >= 0).tolist()  # (B, W)
        sid_ids = (beams.codes.cpu() + first_ids).tolist()  # (B, W, L)
        logprobs = beams.token_logprobs.float().cpu().tolist()
        if targets:
            _inject_targets(model, input_ids, attention_mask, [prompt for prompt, _ in runs], targets, vocab,
                            sid_ids, logprobs, valid)
        out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "beam_rank": []}
        for b, (_, count) in enumerate(runs):
            for rank, slot in enumerate(_slots(mode, count, width)):
                if valid[b][slot]:
                    out["completion_ids"].append([*sid_ids[b][slot], eos_id])
                    out["logprobs"].append([*logprobs[b][slot], 0.0])
                else:  # fewer reachable items than G (a tiny catalog): an empty, EOS-only completion
                    out["completion_ids"].append([eos_id])
                    out["logprobs"].append([0.0])
                out["prompt_ids"].append(prompt_ids[b])
                out["beam_rank"].append(rank % width)
        return out

    return rollout_func


def prompt_key(prompt) -> str:
    """A hashable key of a prompt (a message list or a string), equal for equal prompts."""
    return json.dumps(prompt, sort_keys=True)


def target_codes(rows: list[dict], vocab: SIDVocab) -> dict[str, tuple[int, ...]]:
    """{prompt_key: target SID codes} from GRPO rows; a prompt seen with two different targets is left out."""
    out: dict[str, tuple[int, ...] | None] = {}
    for row in rows:
        key, codes = prompt_key(row["prompt"]), parse_sid(row["target"], vocab.levels)
        out[key] = codes if out.get(key, codes) == codes else None
    return {key: codes for key, codes in out.items() if codes is not None}


def _inject_targets(model, input_ids, attention_mask, prompts: list, targets: dict, vocab: SIDVocab,
                    sid_ids: list, logprobs: list, valid: list) -> None:
    """Put each prompt's target in its group's last slot when the group lacks it (lists edited in place)."""
    import torch

    missing = []
    for b, prompt in enumerate(prompts):
        codes = targets.get(prompt_key(prompt))
        group = [ids for ids, ok in zip(sid_ids[b], valid[b], strict=True) if ok]
        if codes is not None and vocab.ids(codes) not in group:
            missing.append((b, vocab.ids(codes)))
    if not missing:
        return
    rows = torch.tensor([b for b, _ in missing], device=input_ids.device)
    target_ids = torch.tensor([ids for _, ids in missing], device=input_ids.device)
    scores = _completion_logprobs(model, input_ids[rows], attention_mask[rows], target_ids).tolist()
    for (b, ids), score in zip(missing, scores, strict=True):
        sid_ids[b][-1], logprobs[b][-1], valid[b][-1] = ids, score, True


def _completion_logprobs(model, input_ids, attention_mask, completion_ids):
    """(B, L) log-probs (full vocabulary) of each completion token after its left-padded prompt."""
    import torch

    length = completion_ids.shape[1]
    ids = torch.cat([input_ids, completion_ids], dim=1)
    mask = torch.cat([attention_mask, torch.ones_like(completion_ids)], dim=1)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -length - 1 : -1]
    return logits.float().log_softmax(-1).gather(-1, completion_ids[..., None]).squeeze(-1)


def _slots(mode: str, count: int, width: int) -> list[int]:
    """Which of a prompt's `width` decoded slots (best first) fill its `count` completions, in rank order.

    Beam: the top beams, the group repeated when a prompt's run holds several groups. Sample: all samples, or,
    for a partial group, a random subset (the first `count` would favour likely samples).
    """
    if mode == "beam" or count == width:
        return [j % width for j in range(count)]
    import torch

    return sorted(torch.randperm(width)[:count].tolist())


def _runs(prompts: list) -> list[tuple[object, int]]:
    """Consecutive runs of equal prompts as (prompt, count)."""
    runs: list[list] = []
    for prompt in prompts:
        if runs and runs[-1][0] == prompt:
            runs[-1][1] += 1
        else:
            runs.append([prompt, 1])
    return [(prompt, count) for prompt, count in runs]


def _left_pad(sequences: list[list[int]], pad_id: int, device):
    """(B, T) left-padded input_ids and attention_mask."""
    import torch

    width = max(map(len, sequences))
    input_ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences], device=device)
    attention_mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
    return input_ids, attention_mask


def positive_advantage_trainer():
    """GRPOTrainer whose advantages are clamped at 0 after TRL computes them (RLArgs.positive_advantages)."""
    from trl import GRPOTrainer

    class PositiveAdvantageGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            batch = super()._generate_and_score_completions(inputs)
            batch["advantages"] = batch["advantages"].clamp(min=0)
            return batch

    return PositiveAdvantageGRPOTrainer


def load_policy(args: RLArgs, rundir: RunDir, sid_map: dict, items: list[dict]):
    """The trainable policy named by `args.init`: (PeftModel, tokenizer, vocab, base model name)."""
    if args.init == "base":
        model, tokenizer, vocab = load_for_training(args.model_name_or_path, sid_map, items, dtype=args.model_dtype)
        return add_lora(model, args, vocab), tokenizer, vocab, model_reference(args.model_name_or_path)
    source = rundir.require("sft") if args.init == "sft" else args.init
    return continue_from(source, sid_map, rundir.stage("sid"), args)


def copy_sid_rows_to_ref(model) -> None:
    """Give TRL's frozen "ref" adapter the policy's SID rows.

    With beta > 0 and a trained adapter, GRPOTrainer adds a "ref" adapter and copies the parameters whose names
    contain ".default."; PEFT names the trainable-token rows `...trainable_tokens_delta.default` (no trailing dot),
    so without this the reference would score SID tokens with untrained rows and the KL term would be wrong.
    """
    if "ref" not in model.peft_config:
        return
    params = dict(model.named_parameters())
    for name, param in params.items():
        if "trainable_tokens_delta" in name and name.endswith(".default"):
            params[name.removesuffix("default") + "ref"].data.copy_(param.data)


def run(args: RLArgs, training_args) -> Path:
    """Train with GRPO and save the checkpoint; returns <run_dir>/rl.

    Args:
        args: the stage options.
        training_args: a trl.GRPOConfig; output_dir is replaced by <run_dir>/rl and reward_weights are checked
            against `args.rewards` (None = each reward's default weight: hit 1.0, rank 1.0, prefix 0.5).
    """
    import torch
    from datasets import Dataset
    from trl import GRPOTrainer

    from align.decode.trie import SIDTrie

    started = time.time()
    rundir = RunDir(args.run_dir)
    sid_map, items, inputs = load_run_inputs(rundir)
    data_path = rundir.require("data") / "grpo.jsonl"
    rows = read_rows(data_path, ("prompt", "target"))
    out = rundir.stage("rl")
    training_args.output_dir = str(out)

    model, tokenizer, vocab, base_model = load_policy(args, rundir, sid_map, items)
    reward_funcs, training_args.reward_weights = make_rewards(
        args.rewards, training_args.reward_weights, vocab, run_dir=args.run_dir
    )
    # Only now that the policy and rewards loaded: training writes in place, and an old manifest would mark it done.
    (out / MANIFEST).unlink(missing_ok=True)
    trie = SIDTrie.from_codes(torch.tensor(list(sid_map["items"].values())), vocab.level_sizes)
    score_labelled_positions_only()  # CPU: the LM head scores answer tokens only, as on GPUs
    trainer = (positive_advantage_trainer() if args.positive_advantages else GRPOTrainer)(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        rollout_func=make_rollout_func(
            trie, vocab, tokenizer, args.rollout, target_codes(rows, vocab) if args.inject_target else None
        ),
    )
    copy_sid_rows_to_ref(trainer.model)
    logger.info(
        "GRPO on %d prompts, %s rollouts of %d, rewards %s weighted %s, output %s",
        len(rows),
        args.rollout,
        training_args.num_generations,
        args.rewards,
        training_args.reward_weights,
        out,
    )
    trainer.train()

    save_checkpoint(trainer, tokenizer, out, sid_map, base_model, vocab, items=items,
                    prompting=read_json(rundir.stage("data") / "prompting.json"))
    if trainer.accelerator.is_main_process:
        write_manifest(out, "rl", config=[args, training_args], inputs=[*inputs, data_path], started=started)
    trainer.accelerator.wait_for_everyone()
    return out


def main(argv: list[str] | None = None, prog: str = "align rl") -> None:
    from trl import GRPOConfig

    args, training_args = parse_args((RLArgs, GRPOConfig), argv, prog=prog, doc=__doc__)
    run(args, training_args)
