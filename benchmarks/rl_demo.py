"""Does RL after SFT raise NDCG@10 over the SFT model? The CPU demo pipeline once per seed, both models scored.

For each seed: the demo catalog (the same data for every seed: prepare.yaml's seed), SIDs, instruction data,
SFT, a SASRec baseline (the scorer of the `cf` reward), GRPO from the SFT checkpoint, then `align eval` of the SFT
and the RL checkpoints on the same test users. The seed is that of the data subset, SFT, SASRec and GRPO. Prints
one JSON line per seed and a Markdown table with the change in NDCG@10 and HR@10.

    python benchmarks/rl_demo.py --seeds 42 43 44
    python benchmarks/rl_demo.py --seeds 42 --set rl.learning_rate=5e-5 --set rl.max_steps=100

Stages finished in runs/rl_demo/seed<S>/ are reused (--fresh rebuilds them), so a study can be resumed.
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quality import HelpFormatter, overrides_by_name  # noqa: E402  (benchmarks/, next to this script)

from align.cli import main as align  # noqa: E402
from align.run_dir import RunDir, read_json  # noqa: E402

RECIPES = ROOT / "recipes" / "cpu_demo"
COMMANDS = ("prepare", "sids", "data", "sft", "baseline", "rl", "eval")
# (stage folder, command, recipe, seeded)
STAGES = [
    ("catalog", "prepare", "prepare.yaml", False),
    ("sid", "sids", "sids.yaml", False),
    ("data", "data", "data.yaml", True),
    ("sft", "sft", "sft.yaml", True),
    ("sasrec", "baseline", "baseline.yaml", True),
    ("rl", "rl", "rl.yaml", True),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/rl_demo.py", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="Training seeds.")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "rl_demo", help="One run directory per seed here.")
    parser.add_argument("--eval-users", type=int, default=300, help="Seeded subset of test users (0 = all 800).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="COMMAND.KEY=VALUE",
                        help="Override an option of a recipe of recipes/cpu_demo/, e.g. rl.learning_rate=5e-5 "
                        f"(commands: {', '.join(COMMANDS)}; repeatable; a list takes its values separated by "
                        "spaces, e.g. 'rl.reward_weights=1 1').")
    parser.add_argument("--fresh", action="store_true", help="Rebuild every stage.")
    args = parser.parse_args(argv)
    args.extra = overrides_by_name(parser, args.overrides, COMMANDS, "COMMAND")
    return args


def run_seed(seed: int, args: argparse.Namespace) -> dict:
    run_dir = args.out / f"seed{seed}"
    run = RunDir(run_dir)
    seconds = {}
    for folder, command, recipe, seeded in STAGES:
        if run.is_done(folder) and not args.fresh:
            print(f"[rl_demo] seed {seed}: reusing {run.stage(folder)}", flush=True)
            continue
        argv = [command, str(RECIPES / recipe), "--run_dir", str(run_dir)]
        argv += (["--seed", str(seed)] if seeded else []) + args.extra.get(command, [])
        started = time.perf_counter()
        if align(argv) != 0:
            raise SystemExit(f"[rl_demo] seed {seed}: align {' '.join(argv)} failed")
        seconds[folder] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    evaluation = ["eval", str(RECIPES / "eval.yaml"), "--run_dir", str(run_dir), "--models", "sft,rl",
                  "--max_users", str(args.eval_users), *args.extra.get("eval", [])]
    if align(evaluation) != 0:
        raise SystemExit(f"[rl_demo] seed {seed}: evaluation failed")
    seconds["eval"] = round(time.perf_counter() - started, 1)
    metrics = read_json(run_dir / "metrics.json")
    sft, rl = metrics["models"]["sft"], metrics["models"]["rl"]
    return {"seed": seed, "n_users": metrics["n_users"], "sft": sft, "rl": rl,
            "sasrec": metrics["baselines"].get("sasrec"), "ndcg@10_change": round(rl["ndcg@10"] - sft["ndcg@10"], 4),
            "hr@10_change": round(rl["hr@10"] - sft["hr@10"], 4), "seconds": seconds,
            "rl_config": read_json(run.stage("rl") / "manifest.json").get("config")}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = []
    for seed in args.seeds:
        row = run_seed(seed, args)
        print(json.dumps({key: value for key, value in row.items() if key != "rl_config"}), flush=True)
        rows.append(row)
    print("| seed | test users | SFT NDCG@10 | SFT+RL NDCG@10 | change | SFT HR@10 | SFT+RL HR@10 | SASRec NDCG@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        sasrec = f"{row['sasrec']['ndcg@10']:.4f}" if row["sasrec"] else "-"
        print(f"| {row['seed']} | {row['n_users']} | {row['sft']['ndcg@10']:.4f} | {row['rl']['ndcg@10']:.4f} | "
              f"{row['ndcg@10_change']:+.4f} | {row['sft']['hr@10']:.4f} | {row['rl']['hr@10']:.4f} | {sasrec} |")
    raised = all(row["ndcg@10_change"] > 0 for row in rows)
    print(f"RL raised NDCG@10 over SFT for {sum(row['ndcg@10_change'] > 0 for row in rows)} of {len(rows)} seeds"
          + (" (all)" if raised else ""))
    return rows


if __name__ == "__main__":
    main()
