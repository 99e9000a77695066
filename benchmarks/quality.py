"""Real-data quality harness: the whole align pipeline on an LC-Rec dataset folder, rows appended to RESULTS.md.

Runs the stages of a recipe folder (default recipes/industrial) through the real `align` commands, on the data
folder given as the first argument (`items.json` + `sequences.inter.json`, the protocol of
../shared/data/README.md: leave-one-out, histories of at most 10 items, the whole catalog ranked):

    prepare -> sids -> data -> [baseline (SASRec)] -> [scratch (from-scratch SID model)] -> [sft] -> [rl] -> eval

`--rows` picks what is measured: popularity, transitions (counting baselines), sasrec, scratch (the TIGER-style
model trained on SID sequences only: what language pretraining adds), sft, rl. Every row is scored on the same
test users in the same `align eval` run, and one Markdown row per model (command, device, wall time per stage,
HR@5/10, NDCG@5/10) is appended to the end of --results.

Stages already finished in the run directory with the same options are reused, so a long run can be cut into
calls of a few minutes (a GPU lease; see ../shared/gpu/README.md) and resumed; --fresh starts over.

    # counting baselines, SASRec and the from-scratch SID model on the CPU
    python benchmarks/quality.py ../shared/data/industrial --rows popularity,transitions,sasrec,scratch
    # the LM pipeline on a GPU (SmolLM2-135M-Instruct, recipes/industrial budgets)
    python benchmarks/quality.py ../shared/data/industrial --rows sft,rl --device cuda
    # ablations: SID-only tasks, MiniOneRec's SIDs, another quantizer
    python benchmarks/quality.py ../shared/data/industrial --rows sft --tasks seqrec --label sid-only
    python benchmarks/quality.py ../shared/data/industrial --rows scratch --sids minionerec
    python benchmarks/quality.py ../shared/data/industrial --rows scratch --sid-method rq-vae
"""

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from align.cli import main as align  # noqa: E402  (the checkout's align, also when not installed)
from align.run_dir import MANIFEST, RunDir, read_json, write_json  # noqa: E402

ROWS = ("popularity", "transitions", "sasrec", "scratch", "sft", "rl")
# metrics.json name of each row
METRIC_NAMES = {"popularity": "popularity", "transitions": "transitions", "sasrec": "sasrec",
                "scratch": "sid-scratch", "sft": "sft", "rl": "rl"}
# stage -> (align command, recipe file, run-dir folder)
STAGES = {
    "prepare": ("prepare", "prepare.yaml", "catalog"),
    "sids": ("sids", "sids.yaml", "sid"),
    "data": ("data", "data.yaml", "data"),
    "sasrec": ("baseline", "baseline.yaml", "sasrec"),
    "scratch": ("scratch", "scratch.yaml", "scratch"),
    "sft": ("sft", "sft.yaml", "sft"),
    "rl": ("rl", "rl.yaml", "rl"),
    "eval": ("eval", "eval.yaml", "eval"),
}
# stage -> the stages whose output it reads: rebuilding one of them rebuilds it
DEPENDS = {
    "prepare": (),
    "sids": ("prepare",),
    "data": ("prepare", "sids"),
    "sasrec": ("prepare",),
    "scratch": ("prepare", "sids"),
    "sft": ("data",),
    "rl": ("sft", "data", "sasrec"),
    "eval": ("data", "sasrec", "scratch", "sft", "rl"),
}
LOG_HEADING = "## Harness log (`benchmarks/quality.py`)"
LOG_HEADER = (
    "| date | label | row | test users | HR@5 | HR@10 | NDCG@5 | NDCG@10 | device | wall time per stage | command |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option list, the module docstring's examples kept as written."""


def overrides_by_name(
    parser: argparse.ArgumentParser, items: list[str], names, word: str
) -> dict[str, list[str]]:
    """`--set NAME.KEY=VALUE` items -> {NAME: ["--KEY", "VALUE", ...]}; a malformed item or unknown NAME is a usage
    error that says how to write it (`word` is what NAME stands for: STAGE, COMMAND). A VALUE with spaces gives
    one argument per word, for list options: `rl.reward_weights=1 1`."""
    out: dict[str, list[str]] = {}
    for item in items:
        match = re.fullmatch(r"(\w+)\.(\w+)=(.*)", item)
        if not match or match[1] not in names:
            parser.error(f"--set {item!r}: write {word}.KEY=VALUE with {word} one of {', '.join(names)}")
        out.setdefault(match[1], []).extend([f"--{match[2]}", *(match[3].split() or [""])])
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/quality.py",
        description=__doc__,
        epilog="Every stage's own options: `align <command> --help`; set them with --set STAGE.KEY=VALUE.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("data", type=Path, help="Dataset folder in LC-Rec format (items.json, sequences.inter.json).")
    parser.add_argument("--rows", default="popularity,transitions,sasrec,scratch,sft,rl",
                        help=f"Comma-separated rows to measure, from {', '.join(ROWS)}.")
    parser.add_argument("--label", default="", help="Name of this configuration in the results; empty = derived.")
    parser.add_argument("--run-dir", type=Path, default=None, help="Run directory; none = runs/bench/<label>.")
    parser.add_argument("--recipes", type=Path, default=ROOT / "recipes" / "industrial",
                        help="Folder of stage recipes (prepare.yaml, sids.yaml, ...).")
    parser.add_argument("--sids", choices=("ours", "minionerec"), default="ours",
                        help="ours: quantize MiniLM text embeddings; minionerec: import DATA/minionerec_sids.json.")
    parser.add_argument("--sid-method", default=None, help="Quantizer for --sids ours (default: the recipe's).")
    parser.add_argument("--model", default=None, help="Base causal LM id or folder (default: the sft recipe's).")
    parser.add_argument("--tasks", default=None, help="Instruction tasks, e.g. seqrec (default: the data recipe's).")
    parser.add_argument("--sft-steps", type=int, default=0, help="SFT optimizer steps (0 = the recipe's epochs).")
    parser.add_argument("--rl-steps", type=int, default=0, help="GRPO steps (0 = the recipe's).")
    parser.add_argument("--max-users", type=int, default=0,
                        help="Use a seeded subset of this many users for everything (0 = all): a reduced budget.")
    parser.add_argument("--eval-users", type=int, default=0,
                        help="Score a seeded subset of this many test users (0 = all).")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available. cpu also switches SFT/RL to float32 without bf16.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        help=f"Any stage option, e.g. sft.learning_rate=5e-4 (stages: {', '.join(STAGES)}); a list "
                        "option takes its values separated by spaces, e.g. 'rl.reward_weights=1 1'.")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md",
                        help="Markdown file whose harness log gets the rows; '' = do not append.")
    parser.add_argument("--fresh", action="store_true", help="Delete the run directory first (no reuse).")
    args = parser.parse_args(argv)
    args.row_list = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.row_list if r not in ROWS]
    if unknown or not args.row_list:
        parser.error(f"--rows: unknown {unknown[0]!r}; choose from {', '.join(ROWS)}" if unknown else "empty --rows")
    for folder, what in ((args.data, "data folder"), (args.recipes, "recipe folder")):
        if not folder.is_dir():
            parser.error(f"{what} {folder} does not exist")
    if args.sids == "minionerec" and not (args.data / "minionerec_sids.json").is_file():
        parser.error(f"--sids minionerec needs {args.data / 'minionerec_sids.json'}")
    args.stage_overrides = overrides_by_name(parser, args.overrides, STAGES, "STAGE")
    args.device = resolve_device(args.device)
    args.label = args.label or default_label(args)
    args.run_dir = args.run_dir or ROOT / "runs" / "bench" / re.sub(r"[^\w.-]+", "-", args.label)
    return args


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_label(args: argparse.Namespace) -> str:
    parts = [args.data.name, "minionerec-sids" if args.sids == "minionerec" else args.sid_method or "sids"]
    if args.tasks:
        parts.append(args.tasks.replace(",", "+"))
    if args.max_users:
        parts.append(f"{args.max_users}users")
    if args.sft_steps:
        parts.append(f"sft{args.sft_steps}")
    if args.rl_steps:
        parts.append(f"rl{args.rl_steps}")
    return "-".join(parts + [args.device])


def stage_plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(stage, align argv) in running order for the requested rows."""
    rows, data = set(args.row_list), args.data.resolve()
    cpu = args.device == "cpu"
    extra: dict[str, list[str]] = {
        "prepare": ["--source", str(data)] + (["--max_users", str(args.max_users)] if args.max_users else []),
        "sids": (["--import_sids", str(data / "minionerec_sids.json")] if args.sids == "minionerec" else [])
        + (["--method", args.sid_method] if args.sid_method else []) + ["--device", args.device],
        "data": ["--tasks", args.tasks] if args.tasks else [],
        "sasrec": ["--device", args.device],
        "scratch": ["--device", args.device],
        "sft": (["--model_name_or_path", args.model] if args.model else [])
        + (["--max_steps", str(args.sft_steps)] if args.sft_steps else [])
        + (["--use_cpu", "true", "--bf16", "false", "--model_dtype", "float32", "--dataloader_num_workers", "0"]
           if cpu else []),
        "rl": (["--max_steps", str(args.rl_steps)] if args.rl_steps else [])
        + (["--use_cpu", "true", "--bf16", "false", "--model_dtype", "float32"] if cpu else []),
        "eval": [
            "--models", ",".join(r for r in ("sft", "rl") if r in rows),
            "--baselines", ",".join(r for r in ("popularity", "transitions") if r in rows),
            "--max_users", str(args.eval_users), "--device", args.device,
        ],
    }
    wanted = ["prepare", "sids", "data"]
    wanted += [stage for stage, row in (("sasrec", "sasrec"), ("scratch", "scratch")) if row in rows]
    if rows & {"sft", "rl"}:
        wanted.append("sft")
    if "rl" in rows:
        wanted.append("rl")
    wanted.append("eval")
    plan = []
    for stage in wanted:
        command, recipe, _ = STAGES[stage]
        argv = [command, str(args.recipes / recipe), "--run_dir", str(args.run_dir)]
        plan.append((stage, argv + extra[stage] + args.stage_overrides.get(stage, [])))
    return plan


def downstream(stage: str) -> list[str]:
    """The stages that read `stage`'s output, directly or through others."""
    out: list[str] = []
    for later, deps in DEPENDS.items():
        if later not in out and (stage in deps or any(dep in out for dep in deps)):
            out.append(later)
    return out


def run_stages(args: argparse.Namespace, plan: list[tuple[str, list[str]]]) -> dict:
    """Run (or reuse) each stage; returns bench.json's content: per stage its argv and wall seconds."""
    if args.fresh and args.run_dir.exists():
        shutil.rmtree(args.run_dir)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    record_path = args.run_dir / "bench.json"
    record = read_json(record_path) if record_path.is_file() else {"stages": {}}
    run = RunDir(args.run_dir)
    for stage, argv in plan:
        folder = STAGES[stage][2]
        same = run.is_done(folder) and record["stages"].get(stage, {}).get("argv") == argv
        if same and stage != "eval":
            print(f"[quality] {stage}: reusing {run.stage(folder)} ({record['stages'][stage]['seconds']:.0f} s)")
            continue
        if run.is_done(folder) and stage != "eval":
            print(f"[quality] {stage}: {run.stage(folder)} was built with other options or inputs; rebuilding it")
        for later in [stage, *downstream(stage)]:  # what read this stage's old output is out of date too
            (run.stage(STAGES[later][2]) / MANIFEST).unlink(missing_ok=True)
            record["stages"].pop(later, None)
        write_json(record_path, record)
        print(f"[quality] {stage}: align {shlex.join(argv)}", flush=True)
        started = time.perf_counter()
        if align(argv) != 0:
            raise SystemExit(f"[quality] stage {stage} failed; fix it and rerun the same command to resume")
        record["stages"][stage] = {"argv": argv, "seconds": round(time.perf_counter() - started, 1)}
        write_json(record_path, record)
    # stages of an earlier call that this plan does not use are no longer part of this result
    record["stages"] = {stage: record["stages"][stage] for stage, _ in plan}
    write_json(record_path, record)
    return record


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__}"


def result_rows(args: argparse.Namespace, metrics: dict, record: dict, command: str) -> list[str]:
    """One Markdown table row per requested row, in --rows order."""
    scores = metrics["models"] | metrics["baselines"]
    times = ", ".join(f"{stage} {entry['seconds']:.0f} s" for stage, entry in record["stages"].items())
    lines = []
    for row in args.row_list:
        name = METRIC_NAMES[row]
        if name not in scores:
            raise SystemExit(f"[quality] {name} is missing from {args.run_dir / 'metrics.json'}")
        m = scores[name]
        figures = " | ".join(f"{m[key]:.4f}" for key in ("hr@5", "hr@10", "ndcg@5", "ndcg@10"))
        lines.append(f"| {date.today()} | {args.label} | {name} | {metrics['n_users']} | {figures} | "
                     f"{device_name(args.device)} | {times} | `{command}` |")
    return lines


def append_rows(results: Path, lines: list[str]) -> None:
    """Append rows to the harness log, the last section of `results` (created with its header if missing)."""
    text = results.read_text() if results.is_file() else "# Benchmark results\n"
    if LOG_HEADING not in text:
        text = text.rstrip("\n") + (
            f"\n\n{LOG_HEADING}\n\nRows appended by the harness, one per model and run (newest last). This section "
            f"stays the last one of the file.\n\n{LOG_HEADER}\n"
        )
    results.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    command = "python benchmarks/quality.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    plan = stage_plan(args)
    record = run_stages(args, plan)
    metrics = read_json(args.run_dir / "metrics.json")
    lines = result_rows(args, metrics, record, command)
    write_json(args.run_dir / "bench.json", record | {"label": args.label, "command": command, "rows": lines})
    print("\n".join([LOG_HEADER, *lines]))
    if str(args.results) not in ("", "."):
        append_rows(args.results, lines)
        print(f"[quality] appended {len(lines)} rows to {args.results}")
    print(json.dumps({"label": args.label, "metrics": str(args.run_dir / "metrics.json")}))
    return metrics


if __name__ == "__main__":
    main()
