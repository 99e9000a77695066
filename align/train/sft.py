"""LoRA SFT of a causal LM whose vocabulary has been extended with the catalog's SID tokens.

Reads <run_dir>/sid/sid_map.json, <run_dir>/catalog/items.jsonl and <run_dir>/data/sft.jsonl (conversational
prompt-completion rows); writes <run_dir>/sft: the adapter (LoRA + SID rows), tokenizer, sid_map.json,
model_info.json and, last, manifest.json. The loss covers the completion only (TRL's default for
prompt-completion data). Every option of trl.SFTConfig is accepted too; output_dir is always <run_dir>/sft.

    align sft recipes/cpu_demo/sft.yaml
    align sft --run_dir runs/x --max_steps 200 --learning_rate 2e-4
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml -m align.cli sft RECIPE.yaml
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from align.config import parse_args
from align.models import DEFAULT_MODEL, load_for_training, model_reference, save_checkpoint
from align.run_dir import MANIFEST, RunDir, read_json, read_jsonl, write_manifest
from align.train.lora import LoraArgs, add_lora, continue_from
from align.train.speed import score_labelled_positions_only

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class SFTArgs(LoraArgs):
    run_dir: str = field(metadata={"help": "Run directory: reads catalog/, sid/ and data/, writes sft/."})
    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Base causal LM: Hub id, local folder or .gguf file (the default also works offline)."},
    )
    init: str = field(
        default="",
        metadata={
            "help": "Empty: a fresh LoRA on model_name_or_path. Or an align checkpoint of the same SIDs (folder or "
            "Hub id, e.g. another run's sft/) whose adapter trains on: more SFT, e.g. as the control of an RL run "
            "with as many examples. The lora_* options then come from the checkpoint."
        },
    )


def load_run_inputs(rundir: RunDir) -> tuple[dict, list[dict], list[Path]]:
    """sid_map.json and items.jsonl of a run, and the paths read (for the manifest)."""
    sid_path = rundir.require("sid") / "sid_map.json"
    items_path = rundir.require("catalog") / "items.jsonl"
    return read_json(sid_path), read_jsonl(items_path), [sid_path, items_path]


def read_rows(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a data file, each checked for the keys a trainer needs."""
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} is empty: rebuild it with `align data` (are any tasks selected?)")
    for line, row in enumerate(rows, start=1):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(
                f"{path}, line {line}: no {missing[0]!r} field (needs {', '.join(required)}): "
                "rebuild it with `align data`"
            )
    return rows


def run(args: SFTArgs, training_args) -> Path:
    """Train and save the SFT checkpoint; returns <run_dir>/sft.

    Args:
        args: the stage options.
        training_args: a trl.SFTConfig; its output_dir is replaced by <run_dir>/sft.
    """
    from datasets import Dataset
    from trl import SFTTrainer

    started = time.time()
    rundir = RunDir(args.run_dir)
    sid_map, items, inputs = load_run_inputs(rundir)
    data_path = rundir.require("data") / "sft.jsonl"
    rows = read_rows(data_path, ("prompt", "completion"))
    out = rundir.stage("sft")
    if args.init and Path(args.init).resolve() == out.resolve():
        raise ValueError(f"--init {args.init} is this run's own sft/, which training rewrites: copy it elsewhere")
    training_args.output_dir = str(out)

    if args.init:
        model, tokenizer, vocab, base_model = continue_from(args.init, sid_map, rundir.stage("sid"), args)
    else:
        model, tokenizer, vocab = load_for_training(args.model_name_or_path, sid_map, items, dtype=args.model_dtype)
        model, base_model = add_lora(model, args, vocab), model_reference(args.model_name_or_path)
    # Only now that the start loaded: training writes in place, and an old manifest would mark it done.
    (out / MANIFEST).unlink(missing_ok=True)
    dataset = Dataset.from_list([{"prompt": row["prompt"], "completion": row["completion"]} for row in rows])
    score_labelled_positions_only()  # CPU: the LM head scores answer tokens only, as on GPUs
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("SFT on %d examples, %d trainable parameters, output %s", len(dataset), trainable, out)
    result = trainer.train()
    _log_throughput(trainer.state.log_history, result.metrics)

    prompting = read_json(rundir.stage("data") / "prompting.json")
    save_checkpoint(trainer, tokenizer, out, sid_map, base_model, vocab, items=items, prompting=prompting)
    if trainer.accelerator.is_main_process:
        write_manifest(out, "sft", config=[args, training_args], inputs=[*inputs, data_path], started=started)
    trainer.accelerator.wait_for_everyone()
    return out


def _log_throughput(log_history: list[dict], metrics: dict) -> None:
    """Tokens per second from TRL's `num_tokens` count (non-padding tokens seen by all processes)."""
    seconds = metrics.get("train_runtime") or 0.0
    tokens = next((entry["num_tokens"] for entry in reversed(log_history) if "num_tokens" in entry), None)
    if tokens and seconds:
        logger.info("trained on %d tokens in %.1f s: %.0f tokens/s", tokens, seconds, tokens / seconds)
    elif seconds:
        logger.info("trained in %.1f s (%.2f steps/s)", seconds, metrics.get("train_steps_per_second", 0.0))


def main(argv: list[str] | None = None, prog: str = "align sft") -> None:
    from trl import SFTConfig

    args, training_args = parse_args((SFTArgs, SFTConfig), argv, prog=prog, doc=__doc__)
    run(args, training_args)
