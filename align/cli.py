"""`align`: one command per stage; each reads and writes a run directory (see align/run_dir.py).

    align <command> [RECIPE.yaml] [--key value ...]

A recipe is a flat YAML file of the command's options; `--key value` on the command line overrides it.
Training commands run the same way under `accelerate launch -m align.cli sft RECIPE.yaml`.
"""

import importlib
import logging
import sys

# command -> (module with main(argv), one-line summary). Modules are imported only when their command runs,
# so `align --help` answers at once.
COMMANDS = {
    "prepare": ("align.data.prepare", "catalog + interactions (or the built-in demo data) -> <run>/catalog"),
    "baseline": ("align.sasrec", "train a SASRec baseline on the catalog splits -> <run>/sasrec"),
    "sids": ("align.sid.build", "embed item text and quantize it into unique Semantic IDs -> <run>/sid"),
    "scratch": ("align.scratch", "train the from-scratch SID model (no language pretraining) -> <run>/scratch"),
    "data": ("align.data.build", "render instruction data from data_templates/ -> <run>/data"),
    "sft": ("align.train.sft", "LoRA SFT with TRL, SID tokens added and trained -> <run>/sft"),
    "rl": ("align.train.grpo", "GRPO with constrained-beam rollouts and ranking rewards -> <run>/rl"),
    "eval": ("align.eval", "constrained top-K on the test split, HR@K / NDCG@K vs baselines -> <run>/metrics.json"),
    "recommend": ("align.recommend", "top-K catalog items for a history of items"),
    "chat": ("align.chat", "answer chat-style requests with real catalog items"),
    "push": ("align.hub", "push adapter, tokenizer, SID map and model card to the Hugging Face Hub"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [__doc__.strip(), "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`align <command> --help` lists a command's options."]
    return "\n".join(lines)


def normalise_argv(argv: list[str]) -> list[str]:
    """`RECIPE.yaml` as the first argument means `--config RECIPE.yaml`."""
    if argv and not argv[0].startswith("-") and argv[0].endswith((".yaml", ".yml")):
        return ["--config", argv[0], *argv[1:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"align: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    module = importlib.import_module(COMMANDS[command][0])
    try:
        module.main(normalise_argv(rest), prog=f"align {command}")
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        # Input and network problems: one clear line, no traceback (set ALIGN_DEBUG=1 for one).
        if _debug():
            raise
        print(f"align {command}: error: {err}", file=sys.stderr)
        return 1
    return 0


def _debug() -> bool:
    import os

    return os.environ.get("ALIGN_DEBUG", "") not in ("", "0")


if __name__ == "__main__":
    sys.exit(main())
