"""The run directory: the one contract between stages.

Every stage reads what earlier stages wrote and writes its own folder. This module is the only place that
knows the names. Layout (all JSON Lines files are one JSON object per line, UTF-8):

    <run>/catalog/   written by `align prepare`
        items.jsonl        {"item_id": str, "title": str, "description": str, "brand": str,
                            "categories": str, "text": str}   (text: what the SID encoder embeds)
        train.jsonl        {"user_id": str, "history": [item_id, ...], "target": item_id}
        valid.jsonl        same fields; one row per user (second-to-last item as target)
        test.jsonl         same fields; one row per user (last item as target)
        stats.json         counts, skips and their reasons
    <run>/sasrec/    written by `align baseline` (optional): a SASRec baseline, also the scorer of the `cf` reward
        model.pt, config.json, items.json (item ids in the model's index order)
    <run>/sid/       written by `align sids`
        sid_map.json       {"levels": L, "level_sizes": [K0, ..., K{L-1}], "items": {item_id: [c0, ..., c{L-1}]}}
        embeddings.npy     (N, D) float32, rows in items.jsonl order
        report.json        codebook use, collisions, ...; report.png the same as a figure
    <run>/scratch/   written by `align scratch` (optional): the from-scratch SID model, a baseline
        config.json, model.safetensors, scratch.json (SID vocabulary, best epoch), sid_map.json
    <run>/data/      written by `align data`
        sft.jsonl          {"prompt": [messages], "completion": [messages], "task": str, "target": str}
        grpo.jsonl         {"prompt": [messages], "task": "seqrec", "target": str, "target_item": item_id,
                            "history": [item_id, ...]}
        valid.jsonl, test.jsonl   like grpo.jsonl, plus "user_id"
        prompting.json     system prompt, history length and canonical prompt per sequence task (for inference)
    <run>/sft/, <run>/rl/   written by `align sft` / `align rl`: a PEFT adapter, the tokenizer, sid_map.json,
        model_info.json (base model, SID token ids), items.jsonl (ids and titles) and prompting.json, so a
        checkpoint recommends on its own
    <run>/eval/      written by `align eval`: predictions_<model>.jsonl, metrics.json (copied to <run>/metrics.json)

Each stage folder ends with `manifest.json` (stage, config, inputs, versions, times), written last: a folder
without it is not a finished stage. Non-training stages build in `<stage>.tmp/` and rename it into place, so a
failed run never leaves a half-written stage folder behind.
"""

import json
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGES = ("catalog", "sasrec", "sid", "scratch", "data", "sft", "rl", "eval")
# Stages no later stage needs: "run X first" messages never point at them.
OPTIONAL_STAGES = ("sasrec", "scratch", "rl")
# Which command writes each stage folder, for "run X first" messages.
STAGE_COMMANDS = {
    "catalog": "align prepare",
    "sasrec": "align baseline",
    "sid": "align sids",
    "scratch": "align scratch",
    "data": "align data",
    "sft": "align sft",
    "rl": "align rl",
    "eval": "align eval",
}
MANIFEST = "manifest.json"


class RunDir:
    """Paths and completion state of one run directory."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def stage(self, name: str) -> Path:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
        return self.root / name

    def is_done(self, name: str) -> bool:
        return (self.stage(name) / MANIFEST).is_file()

    def require(self, name: str) -> Path:
        """The folder of a finished stage, or a FileNotFoundError that says which command makes it."""
        path = self.stage(name)
        if not self.is_done(name):
            state = "is unfinished (no manifest.json)" if path.exists() else "does not exist"
            # Point at the earliest missing stage (optional ones aside), not merely at the one asked for.
            earlier = [s for s in STAGES[: STAGES.index(name)] if s not in OPTIONAL_STAGES and not self.is_done(s)]
            first = (earlier or [name])[0]
            raise FileNotFoundError(f"{path} {state}: run `{STAGE_COMMANDS[first]} --run_dir {self.root}` first")
        return path

    def latest_model(self) -> Path:
        """The newest finished model stage: rl if done, else sft."""
        for name in ("rl", "sft"):
            if self.is_done(name):
                return self.stage(name)
        raise FileNotFoundError(f"{self.root} has no trained model: run `align sft --run_dir {self.root}` first")

    @contextmanager
    def building(self, name: str, *, config: Any = None, inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
        """Build a stage in `<stage>.tmp/` and move it into place only if the body succeeds.

        The manifest is written last, inside the temporary folder, then the folder is renamed over any older
        result. On error the temporary folder is removed and the previous result, if any, stays untouched.
        """
        final = self.stage(name)
        tmp = final.with_name(name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        started = time.time()
        try:
            yield tmp
            write_manifest(tmp, name, config=config, inputs=inputs, started=started)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)


def _jsonable(config: Any) -> Any:
    if config is None:
        return None
    if isinstance(config, list | tuple):
        return [_jsonable(c) for c in config]
    if is_dataclass(config):
        return {k: v for k, v in asdict(config).items() if _is_json(v)}
    return config


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("align-rec", "torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def write_manifest(
    folder: Path, stage: str, *, config: Any = None, inputs: Iterable[str | os.PathLike] = (), started: float
) -> Path:
    """Write `manifest.json` into a finished stage folder; its presence marks the stage done."""
    manifest = {
        "stage": stage,
        "command": sys.argv,
        "config": _jsonable(config),
        "inputs": [str(p) for p in inputs],
        "versions": package_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 2),
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows as JSON Lines; returns the number of rows."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
