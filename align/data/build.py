"""Render instruction data for SFT, GRPO and evaluation from the task templates in data_templates/.

Reads <run_dir>/catalog and <run_dir>/sid; writes <run_dir>/data:
  sft.jsonl     prompt + completion (TRL's conversational format) for every task whose splits include sft:
                sequence tasks from train sequences (one seeded random paraphrase each), item tasks from the
                catalog items; shuffled with the seed.
  grpo.jsonl    canonical prompt + target SID + target_item + history (item ids, for the `cf` reward), from train
                sequences (tasks with grpo).
  valid.jsonl, test.jsonl   the same from the valid/test sequences, plus user_id (tasks with eval).
  stats.json    examples per file and task, and skipped examples per reason.

    align data recipes/cpu_demo/data.yaml
    align data --run_dir runs/x --tasks seqrec,sid2title --max_sft_examples 5000
"""

import logging
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from align.config import parse_args
from align.data.fields import item_fields, sequence_fields
from align.data.templates import DEFAULT_TEMPLATES_DIR, Template, chat_messages, load_templates, render
from align.run_dir import STAGE_COMMANDS, RunDir, read_json, read_jsonl, write_json, write_jsonl
from align.tokens import format_sid

logger = logging.getLogger(__name__)

SEQUENCE_FILES = ("train", "valid", "test")


@dataclass
class DataArgs:
    run_dir: str = field(metadata={"help": "Run directory: reads catalog/ and sid/, writes data/."})
    templates_dir: str = field(
        default="",
        metadata={"help": "Folder of task templates (*.yaml); empty = the data_templates/ shipped with align."},
    )
    tasks: str = field(
        default="seqrec,titles2sid,sid2title,title2sid",
        metadata={"help": "Comma-separated tasks to render (template `task` names)."},
    )
    system_prompt: str = field(
        default="You recommend items by their IDs.",
        metadata={"help": "System message of every prompt; empty = no system message. Keep it short: CPU budgets."},
    )
    max_history: int = field(
        default=10, metadata={"help": "Most recent history items shown in a prompt (history_sids/history_titles)."}
    )
    item_tasks_repeat: int = field(
        default=1, metadata={"help": "Examples per catalog item for item tasks, each with a different paraphrase."}
    )
    max_sft_examples: int = field(
        default=0, metadata={"help": "Keep a seeded random subset of this many SFT examples; 0 = keep all."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for paraphrase choice, shuffling and subsetting."})

    def __post_init__(self) -> None:
        if not self.templates_dir:
            self.templates_dir = str(DEFAULT_TEMPLATES_DIR)
        if not self.task_list:
            raise ValueError("tasks is empty: name at least one task, e.g. --tasks seqrec")
        for name in ("max_history", "item_tasks_repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_sft_examples < 0:
            raise ValueError(f"max_sft_examples must be >= 0 (0 = all), got {self.max_sft_examples}")

    @property
    def task_list(self) -> list[str]:
        return [task.strip() for task in self.tasks.split(",") if task.strip()]


def run(args: DataArgs) -> Path:
    """Render <run_dir>/data from the catalog, the SIDs and the templates; returns the data folder."""
    rundir = RunDir(args.run_dir)
    catalog_dir, sid_dir = rundir.require("catalog"), rundir.require("sid")
    templates = load_templates(args.templates_dir, args.task_list)

    for split, files in (("grpo", "grpo.jsonl"), ("eval", "valid.jsonl and test.jsonl")):
        if not any(split in template.splits for template in templates.values()):
            logger.warning("no task in --tasks feeds %s, so %s will be empty: add seqrec", split, files)

    items = {row["item_id"]: row for row in _read_rows(catalog_dir / "items.jsonl", "catalog")}
    sids = load_sids(sid_dir / "sid_map.json", items)
    sequences = {name: _read_rows(catalog_dir / f"{name}.jsonl", "catalog") for name in SEQUENCE_FILES}
    for name, rows in sequences.items():
        check_sequences(rows, catalog_dir / f"{name}.jsonl", sids)
    logger.info(
        "%d items, %s sequences; tasks %s",
        len(items),
        "/".join(f"{len(rows)} {name}" for name, rows in sequences.items()),
        ", ".join(templates),
    )

    builder = _Builder(args, items, sids)
    sft, sft_total = builder.sft_rows(templates, sequences["train"])
    outputs = {
        "sft": sft,
        "grpo": builder.target_rows(templates, sequences["train"], split="grpo", output="grpo"),
        "valid": builder.target_rows(templates, sequences["valid"], split="eval", output="valid"),
        "test": builder.target_rows(templates, sequences["test"], split="eval", output="test"),
    }
    for output, counts in builder.skipped.items():
        for reason, count in counts.items():
            logger.warning("%s: skipped %d examples (%s)", output, count, reason)
    stats = {
        "examples": {name: _count_tasks(rows, templates) for name, rows in outputs.items()},
        "sft_before_subset": sft_total,
        "skipped": builder.skipped,
        "templates": {task: str(template.path) for task, template in templates.items()},
    }
    with rundir.building("data", config=args, inputs=[catalog_dir, sid_dir, args.templates_dir]) as out:
        for name, rows in outputs.items():
            write_jsonl(out / f"{name}.jsonl", rows)
            logger.info("%s.jsonl: %d rows %s", name, len(rows), stats["examples"][name])
        write_json(out / "stats.json", stats)
        write_json(out / PROMPTING, prompting(args, templates))
    return rundir.stage("data")


PROMPTING = "prompting.json"


def prompting(args: DataArgs, templates: Mapping[str, Template]) -> dict:
    """How a history becomes a prompt, for inference: checkpoints carry this file so chat uses the training prompt."""
    return {
        "system_prompt": args.system_prompt,
        "max_history": args.max_history,
        "prompts": {task: t.prompts[0] for task, t in templates.items() if t.source == "sequence"},
    }


def load_sids(path: Path, items: Mapping[str, Mapping]) -> dict[str, str]:
    """item id -> SID string from sid/sid_map.json; every catalog item must have one."""
    codes = read_json(_require_file(path, "sid")).get("items")
    if not isinstance(codes, dict):
        raise ValueError(f'{path}: no "items" mapping of item id -> codes: rerun `{_rerun(path, "sid")}`')
    missing = [item_id for item_id in items if item_id not in codes]
    if missing:
        raise ValueError(
            f"{path}: catalog item {missing[0]!r} has no SID ({len(missing)} items lack one): "
            f"rerun `{_rerun(path, 'sid')}` after `{_rerun(path, 'catalog')}`"
        )
    return {item_id: format_sid(codes[item_id]) for item_id in items}


def check_sequences(rows: list[dict], path: Path, sids: Mapping[str, str]) -> None:
    """Raise a ValueError naming the user and the item when a sequence refers to an item without a SID."""
    for row in rows:
        for item_id in (*row["history"], row["target"]):
            if item_id not in sids:
                raise ValueError(
                    f"{path}: user {row['user_id']!r} refers to item {item_id!r}, which has no SID (it is not in "
                    f"catalog/items.jsonl): rerun `{_rerun(path, 'catalog')}` and `{_rerun(path, 'sid')}`"
                )


class _Builder:
    """Renders rows and counts what it skips: examples whose template uses an empty field (e.g. no title)."""

    def __init__(self, args: DataArgs, items: Mapping[str, Mapping], sids: Mapping[str, str]) -> None:
        self.args, self.items, self.sids = args, items, sids
        self.skipped: dict[str, dict[str, int]] = {}

    def sft_rows(self, templates: Mapping[str, Template], train: list[dict]) -> tuple[list[dict], int]:
        """Shuffled SFT rows (a seeded subset when max_sft_examples is set), and the count before subsetting."""
        rows = []
        for template in templates.values():
            if "sft" not in template.splits:
                continue
            examples, total = self._sft_examples(template, train)
            for fields, index in tqdm(examples, total=total, desc=f"sft {template.task}", unit="ex"):
                if self._keep(template, fields, index, "sft"):
                    prompt, response = render(template, fields, index)
                    rows.append(
                        {
                            "prompt": chat_messages(prompt, self.args.system_prompt),
                            "completion": [{"role": "assistant", "content": response}],
                            "task": template.task,
                            "target": response,
                        }
                    )
        total = len(rows)
        random.Random(self.args.seed).shuffle(rows)
        if 0 < self.args.max_sft_examples < total:
            rows = rows[: self.args.max_sft_examples]
            logger.info("sft: kept a seeded subset of %d of %d examples (max_sft_examples)", len(rows), total)
        return rows, total

    def target_rows(
        self, templates: Mapping[str, Template], sequences: list[dict], *, split: str, output: str
    ) -> list[dict]:
        """Rows with the canonical prompt, the target SID and item, for tasks feeding `split` (grpo or eval).

        Rows carry the full history (item ids): baselines, seen-item filtering and the `cf` reward read it. Eval
        rows also carry user_id.
        """
        rows = []
        for template in templates.values():
            if split not in template.splits:
                continue
            for row in tqdm(sequences, desc=f"{output} {template.task}", unit="ex"):
                fields = self._sequence_fields(row)
                if not self._keep(template, fields, 0, output):
                    continue
                prompt, target = render(template, fields, 0)
                out = {
                    "prompt": chat_messages(prompt, self.args.system_prompt),
                    "task": template.task,
                    "target": target,
                    "target_item": row["target"],
                    "history": list(row["history"]),
                }
                if split == "eval":
                    out["user_id"] = row["user_id"]
                rows.append(out)
        return rows

    def _sft_examples(self, template: Template, train: list[dict]) -> tuple[Iterator[tuple[dict, int]], int]:
        """(fields, paraphrase index) pairs and their number; the draws depend only on the seed and the task."""
        rng = random.Random(f"{self.args.seed}:{template.task}")
        n_prompts = len(template.prompts)
        if template.source == "sequence":
            pairs = ((self._sequence_fields(row), rng.randrange(n_prompts)) for row in train)
            return pairs, len(train)
        repeat = self.args.item_tasks_repeat

        def item_pairs() -> Iterator[tuple[dict, int]]:
            for item_id, item in self.items.items():
                fields, start = item_fields(item, self.sids[item_id]), rng.randrange(n_prompts)
                # Consecutive paraphrases from a random start: repeats of one item never share a paraphrase
                # until all are used.
                for offset in range(repeat):
                    yield fields, (start + offset) % n_prompts

        return item_pairs(), len(self.items) * repeat

    def _sequence_fields(self, row: Mapping) -> dict[str, Any]:
        return sequence_fields(row["history"], row["target"], self.items, self.sids, self.args.max_history)

    def _keep(self, template: Template, fields: Mapping[str, Any], index: int, output: str) -> bool:
        empty = sorted(name for name in template.fields_used(index) if not str(fields[name]).strip())
        if not empty:
            return True
        reason = f"{template.task}: empty {', '.join(empty)}"
        counts = self.skipped.setdefault(output, {})
        counts[reason] = counts.get(reason, 0) + 1
        return False


def _count_tasks(rows: list[dict], templates: Mapping[str, Template]) -> dict[str, int]:
    counts = Counter(row["task"] for row in rows)
    return {task: counts[task] for task in templates if counts[task]}


def _read_rows(path: Path, stage: str) -> list[dict]:
    return read_jsonl(_require_file(path, stage))


def _require_file(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: rerun `{_rerun(path, stage)}`")
    return path


def _rerun(path: Path, stage: str) -> str:
    """The command that rebuilds `stage` of the run holding `path` (<run>/<stage folder>/<file>)."""
    return f"{STAGE_COMMANDS[stage]} --run_dir {path.parent.parent}"


def main(argv: list[str] | None = None, prog: str = "align data") -> None:
    (args,) = parse_args((DataArgs,), argv, prog=prog, doc=__doc__)
    run(args)
