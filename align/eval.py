"""Evaluate trained models on the test split: constrained top-K over the catalog, HR@K and NDCG@K.

Every finished model stage of the run (sft, rl) is scored on the same rows, beside counting baselines computed in
the same run (popularity, first-order transitions) and, when `align baseline` has run, SASRec (trained on the train
rows, the validation rows used for early stopping only). Results go to <run>/eval/ (predictions per model,
metrics.json) and to <run>/metrics.json:

    {"model": {"hr@5": ..., "hr@10": ..., "ndcg@5": ..., "ndcg@10": ...},   # the last stage (rl if present)
     "models": {"sft": {...}, "rl": {...}},
     "baselines": {"popularity": {...}, "transitions": {...}}, ...}

    align eval recipes/cpu_demo/eval.yaml
    align eval --run_dir runs/demo --models sft,rl --num_beams 20
"""

import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from align.run_dir import RunDir, read_jsonl, write_json, write_jsonl

logger = logging.getLogger(__name__)


@dataclass
class EvalArgs:
    run_dir: str = field(default="runs/demo", metadata={"help": "Run directory: reads data/ and the model stages."})
    models: str = field(
        default="sft,rl",
        metadata={"help": "Comma-separated model stages of the run to score (those not finished are skipped), "
                  "or paths / hub ids of checkpoints; empty = the baselines only."},
    )
    split: str = field(default="test", metadata={"help": "Rows to score: 'test' or 'valid'."})
    num_beams: int = field(default=20, metadata={"help": "Beams of the constrained search; top-K takes the best K."})
    ks: str = field(default="1,5,10", metadata={"help": "Comma-separated cut-offs K for HR@K and NDCG@K."})
    batch_size: int = field(default=16, metadata={"help": "Prompts decoded together."})
    max_users: int = field(default=0, metadata={"help": "Score a seeded random subset of this many rows (0 = all)."})
    baselines: str = field(default="popularity,transitions", metadata={"help": "Counting baselines to report."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu' or 'cuda'."})
    seed: int = field(default=0, metadata={"help": "Seed for the row subset."})

    def __post_init__(self) -> None:
        if self.split not in ("test", "valid"):
            raise ValueError(f"--split must be 'test' or 'valid', got {self.split!r}")
        self.k_list = sorted({int(k) for k in self.ks.split(",") if k.strip()})
        if not self.k_list or self.k_list[0] < 1:
            raise ValueError(f"--ks must list positive integers, got {self.ks!r}")
        if self.num_beams < self.k_list[-1]:
            raise ValueError(f"--num_beams ({self.num_beams}) must be at least the largest K ({self.k_list[-1]})")


def _rows(run: RunDir, args: EvalArgs) -> tuple[list[dict], list[dict]]:
    """The scored rows (prompt, target item) and the rows the baselines may learn from."""
    data, catalog = run.require("data"), run.require("catalog")
    rows = read_jsonl(data / f"{args.split}.jsonl")
    if not rows:
        raise ValueError(f"{data / (args.split + '.jsonl')} is empty: no users to evaluate")
    if args.max_users and args.max_users < len(rows):
        rows = random.Random(args.seed).sample(rows, args.max_users)
    train = read_jsonl(catalog / "train.jsonl")
    if args.split == "test":
        train += read_jsonl(catalog / "valid.jsonl")
    return rows, train


def score_model(checkpoint: str, rows: list[dict], args: EvalArgs) -> tuple[dict, list[dict], float]:
    """Decode top-K for each row with one checkpoint; returns metrics, predictions and prompts/s."""
    import torch

    from align.decode.beam import topk_items
    from align.decode.trie import SIDTrie
    from align.metrics import ranking_metrics
    from align.models import load_checkpoint
    from align.tokens import format_sid, sid_table

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model, tokenizer, vocab, sid_map = load_checkpoint(checkpoint, device=device)
    item_ids, codes = sid_table(sid_map)
    trie = SIDTrie.from_codes(codes, sid_map["level_sizes"]).to(device)
    k = args.k_list[-1]
    start = time.perf_counter()
    with torch.no_grad():
        beams = topk_items(model, tokenizer, [row["prompt"] for row in rows], trie, vocab, k=k,
                           num_beams=args.num_beams, batch_size=args.batch_size)
    speed = len(rows) / (time.perf_counter() - start)
    ranked, predictions = [], []
    for row, items, scores in zip(rows, beams.items.tolist(), beams.scores.tolist(), strict=True):
        top = [(item_ids[i], s) for i, s in zip(items, scores, strict=True) if i >= 0]
        ranked.append([item for item, _ in top])
        predictions.append({
            "user_id": row.get("user_id"),
            "target_item": row["target_item"],
            "ranked": [{"item_id": item, "sid": format_sid(sid_map["items"][item]), "score": round(s, 4)}
                       for item, s in top],
        })
    metrics = ranking_metrics(ranked, [row["target_item"] for row in rows], ks=args.k_list)
    metrics["prompts_per_s"] = round(speed, 2)
    return metrics, predictions, speed


def _checkpoints(run: RunDir, models: str) -> dict[str, str]:
    """Model name -> checkpoint; {} when `models` is empty (a baselines-only evaluation)."""
    names = [m.strip() for m in models.split(",") if m.strip()]
    out = {}
    for name in names:
        if name in ("sft", "rl"):
            if run.is_done(name):
                out[name] = str(run.stage(name))
            else:
                logger.info("skipping %s: %s is not a finished stage", name, run.stage(name))
        else:
            out[Path(name).name or name] = name
    if names and not out:
        raise FileNotFoundError(
            f"no model to evaluate in {run.root} (asked for {models!r}): run `align sft --run_dir {run.root}` first"
        )
    return out


def run(args: EvalArgs) -> Path:
    from align.baselines import rank_baseline
    from align.metrics import ranking_metrics

    run_dir = RunDir(args.run_dir)
    rows, train_rows = _rows(run_dir, args)
    checkpoints = _checkpoints(run_dir, args.models)
    targets = [row["target_item"] for row in rows]
    result: dict = {"split": args.split, "n_users": len(rows), "num_beams": args.num_beams, "models": {},
                    "baselines": {}}
    k = args.k_list[-1]
    for name in [b.strip() for b in args.baselines.split(",") if b.strip()]:
        ranked = rank_baseline(name, train_rows, rows, k)
        result["baselines"][name] = ranking_metrics(ranked, targets, ks=args.k_list)
    if run_dir.is_done("sasrec"):
        from align.sasrec import load_sasrec

        ranked = load_sasrec(run_dir.stage("sasrec"), device=args.device).rank([r["history"] for r in rows], k)
        result["baselines"]["sasrec"] = ranking_metrics(ranked, targets, ks=args.k_list)
    if run_dir.is_done("scratch"):
        from align.scratch import load_scratch

        scorer = load_scratch(run_dir.stage("scratch"), device=args.device)
        ranked = scorer.rank([r["history"] for r in rows], k, args.num_beams)
        result["baselines"]["sid-scratch"] = ranking_metrics(ranked, targets, ks=args.k_list)
    if not checkpoints and not result["baselines"]:
        raise ValueError("nothing to evaluate: name models (--models sft,rl) or baselines (--baselines popularity)")
    with run_dir.building("eval", config=args, inputs=list(checkpoints.values())) as out:
        for name, checkpoint in checkpoints.items():
            logger.info("scoring %s on %d %s rows", checkpoint, len(rows), args.split)
            metrics, predictions, _ = score_model(checkpoint, rows, args)
            result["models"][name] = metrics
            write_jsonl(out / f"predictions_{name}.jsonl", predictions)
        if checkpoints:
            result["model"] = result["models"][list(checkpoints)[-1]]
            result["model_name"] = list(checkpoints)[-1]
        write_json(out / "metrics.json", result)
    shutil.copyfile(run_dir.stage("eval") / "metrics.json", run_dir.root / "metrics.json")
    logger.info("%s", format_table(result))
    return run_dir.stage("eval")


def format_table(result: dict) -> str:
    """Metrics as a small aligned text table, models first."""
    rows = [(name, m) for name, m in result["models"].items()] + list(result["baselines"].items())
    keys = [k for k in next(iter(rows))[1] if k.startswith(("hr@", "ndcg@"))]
    header = "  ".join([f"{'':<12}"] + [f"{k:>8}" for k in keys])
    lines = [f"{result['split']} split, {result['n_users']} users", header]
    for name, m in rows:
        lines.append("  ".join([f"{name:<12}"] + [f"{m[k]:>8.4f}" for k in keys]))
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "align eval") -> None:
    from align.config import parse_args

    (args,) = parse_args((EvalArgs,), argv, prog=prog, doc=__doc__)
    run(args)
