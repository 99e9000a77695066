"""Turn a catalog and its interactions, or the built-in demo data, into <run>/catalog: items and splits.

    align prepare recipes/cpu_demo/prepare.yaml
    align prepare --run_dir runs/industrial --source ../shared/data/industrial
    align prepare --run_dir runs/mine --source items.jsonl --interactions interactions.csv --split time

`--source` is "demo" (a seeded synthetic catalog), a folder in a known layout (LC-Rec: items.json or
<name>.item.json with <name>.inter.json; MiniOneRec: the same catalog with its CSV files; plain: items.jsonl or
items.csv with interactions.jsonl or interactions.csv; Amazon: meta_*.json(.gz) with one reviews file), or a
catalog file with `--interactions`. Formats: see align/catalog.py.

Splits: `leave-one-out` (per user: last item = test target, the one before = valid target, every earlier prefix
a training example) or `time` (all history -> target examples ordered by target time, cut into train / valid /
test). Histories keep the last `max_history` items. Writes items.jsonl, train/valid/test.jsonl and stats.json,
plus imported_sids.json when the source carries SIDs (MiniOneRec CSV, or `--sids` with an LC-Rec index file).
"""

import csv
import logging
import random
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from align.catalog import (
    FORMATS,
    UNTIMED_FORMATS,
    Interaction,
    Item,
    SkipLog,
    build_sequences,
    detect_format,
    item_text,
    load_catalog,
    load_interactions,
    load_minionerec,
    load_sid_index,
)
from align.config import parse_args
from align.run_dir import RunDir, write_json, write_jsonl

logger = logging.getLogger(__name__)

SPLITS = ("leave-one-out", "time")
CATALOG_NAMES = ("items.json", "*.item.json", "items.jsonl", "items.csv", "meta*.json*", "items.*")
INTERACTION_NAMES = ("*.inter.json", "interactions.jsonl", "interactions.csv", "interactions.*")
SPLIT_ORDER = ("train", "valid", "test")


@dataclass
class PrepareArgs:
    run_dir: str = field(default="runs/demo", metadata={"help": "Run directory; writes <run_dir>/catalog."})
    source: str = field(
        default="demo",
        metadata={"help": "'demo' (built-in synthetic data), a folder with items + interactions, or a catalog file."},
    )
    interactions: str = field(
        default="",
        metadata={"help": "Interactions file or folder; needed when --source is a catalog file."},
    )
    format: str = field(
        default="auto", metadata={"help": f"Input format: auto or one of {', '.join(FORMATS)} (align/catalog.py)."}
    )
    split: str = field(
        default="leave-one-out",
        metadata={"help": "leave-one-out (per user: last item = test, the one before = valid), or time."},
    )
    max_history: int = field(default=10, metadata={"help": "Keep at most this many latest items in a history."})
    valid_fraction: float = field(default=0.1, metadata={"help": "split=time: share of examples for validation."})
    test_fraction: float = field(default=0.1, metadata={"help": "split=time: share of (latest) examples for test."})
    sids: str = field(
        default="",
        metadata={"help": "Optional SID index to keep, {item_id: ['<a_1>', '<b_2>', ...]} (LC-Rec/MiniOneRec)."},
    )
    max_users: int = field(default=0, metadata={"help": "Keep a seeded random subset of this many users (0 = all)."})
    seed: int = field(default=0, metadata={"help": "Seed of the demo data and of the --max_users subset."})
    demo_items: int = field(default=300, metadata={"help": "source=demo: number of catalog items."})
    demo_users: int = field(default=800, metadata={"help": "source=demo: number of users."})
    allow_missing_titles: bool = field(
        default=False, metadata={"help": "Skip (and count) catalog items without a title instead of failing."}
    )

    def __post_init__(self) -> None:
        if self.format not in ("auto", *FORMATS):
            raise ValueError(f"--format {self.format!r}: use auto or one of {', '.join(FORMATS)}")
        if self.split not in SPLITS:
            raise ValueError(f"--split {self.split!r}: use one of {', '.join(SPLITS)}")
        if self.max_history < 1:
            raise ValueError(f"--max_history must be at least 1, got {self.max_history}")
        if not (0 <= self.valid_fraction and 0 < self.test_fraction and self.valid_fraction + self.test_fraction < 1):
            raise ValueError("--valid_fraction and --test_fraction must be >= 0 and > 0 and sum to less than 1")


def leave_one_out(sequences: dict[str, list[str]], max_history: int) -> dict[str, list[dict]]:
    """Per user s1..sn: test (s1..s(n-1) -> sn), valid (s1..s(n-2) -> s(n-1)) if n >= 3, train every earlier prefix."""
    splits: dict[str, list[dict]] = {name: [] for name in SPLIT_ORDER}
    for user, items in sequences.items():
        n = len(items)
        for target in range(1, n):
            name = "test" if target == n - 1 else "valid" if target == n - 2 else "train"
            splits[name].append(_example(user, items, target, max_history))
    return splits


def time_split(
    sequences: dict[str, list[tuple[str, float]]], max_history: int, valid_fraction: float, test_fraction: float
) -> dict[str, list[dict]]:
    """Every history -> target example, ordered by target time (ties keep user order), cut into train/valid/test."""
    order = sorted(
        ((events[j][1], user, j) for user, events in sequences.items() for j in range(1, len(events))),
        key=lambda example: example[0],
    )
    n_test, n_valid = round(len(order) * test_fraction), round(len(order) * valid_fraction)
    n_train = len(order) - n_valid - n_test
    items = {user: [item for item, _ in events] for user, events in sequences.items()}
    rows = [_example(user, items[user], j, max_history) for _, user, j in order]
    return {"train": rows[:n_train], "valid": rows[n_train : n_train + n_valid], "test": rows[n_train + n_valid :]}


def _example(user: str, items: list[str], target: int, max_history: int) -> dict:
    return {"user_id": user, "history": items[max(0, target - max_history) : target], "target": items[target]}


def find_source_files(folder: Path, fmt: str = "auto") -> tuple[Path, list[Path]]:
    """The catalog file and the interaction file(s) of a dataset folder in a known layout."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".index.json"))
    catalog = next((p for pattern in CATALOG_NAMES for p in files if fnmatch(p.name, pattern)), None)
    if catalog is None:
        raise FileNotFoundError(
            f"{folder} has no catalog file (looked for {', '.join(CATALOG_NAMES)}): pass the catalog file as --source"
        )
    rest = [p for p in files if p != catalog]
    minionerec = sorted((p for p in rest if _is_minionerec_csv(p)), key=_split_rank)
    candidates = {
        "lcrec": [p for p in rest if fnmatch(p.name, "*.inter.json")],
        "minionerec": minionerec,
        "plain": next(([p] for pattern in INTERACTION_NAMES[1:] for p in rest if fnmatch(p.name, pattern)), []),
        "amazon": [p for p in rest if ".json" in p.name and _is_amazon(p)],
    }
    kinds = {"jsonl": "plain", "csv": "plain"}
    for kind in [kinds.get(fmt, fmt)] if fmt != "auto" else list(candidates):
        found = candidates[kind]
        if kind == "amazon" and len(found) > 1:
            raise ValueError(f"{folder} has several review files ({', '.join(p.name for p in found)}): "
                             "pass the one to use as --interactions")
        if found:
            return catalog, found
    raise FileNotFoundError(
        f"{folder} has a catalog ({catalog.name}) but no interactions file (looked for "
        f"{', '.join(INTERACTION_NAMES)}, MiniOneRec CSVs, Amazon reviews): pass --interactions"
    )


def _is_minionerec_csv(path: Path) -> bool:
    if not path.name.endswith(".csv"):
        return False
    with open(path, encoding="utf-8", newline="") as f:
        return "history_item_id" in next(csv.reader(f), [])


def _is_amazon(path: Path) -> bool:
    try:
        return detect_format(path) == "amazon"
    except ValueError:
        return False


def _split_rank(path: Path) -> tuple[int, str]:
    """Train before valid before test, so merged windows run in time order."""
    rank = next((i for i, name in enumerate(SPLIT_ORDER) if name in path.name), len(SPLIT_ORDER))
    return rank, path.name


def load_source(
    args: PrepareArgs, skips: SkipLog
) -> tuple[list[Item], list[Interaction], dict[str, tuple[int, ...]], list[Path], str]:
    """Items, interactions, imported SIDs, the input files and the interactions' format named by `args`."""
    if args.source == "demo":
        from align.data.synthetic import make_demo_data

        items, interactions = make_demo_data(args.demo_items, args.demo_users, seed=args.seed)
        return items, interactions, {}, [], "demo"
    source = Path(args.source)
    if not source.exists():
        raise FileNotFoundError(f"--source {source} not found: pass 'demo', a dataset folder or a catalog file")
    if source.is_dir():
        catalog_path, interaction_paths = find_source_files(source, args.format)
        if args.interactions:
            interaction_paths = _interaction_paths(Path(args.interactions), args.format)
    elif args.interactions:
        catalog_path, interaction_paths = source, _interaction_paths(Path(args.interactions), args.format)
    else:
        raise ValueError(f"--source {source} is a file: pass its interactions with --interactions PATH")
    items = load_catalog(catalog_path, args.format, allow_missing_titles=args.allow_missing_titles, skips=skips)
    fmt = detect_format(interaction_paths[0]) if args.format == "auto" else args.format
    sids: dict[str, tuple[int, ...]] = {}
    if fmt == "minionerec":
        interactions, sids = load_minionerec(interaction_paths)
    else:
        interactions = load_interactions(interaction_paths, fmt)
    if args.sids:
        sids = load_sid_index(args.sids)
    inputs = [catalog_path, *interaction_paths] + ([Path(args.sids)] if args.sids else [])
    return items, interactions, sids, inputs, fmt


def _interaction_paths(path: Path, fmt: str) -> list[Path]:
    if not path.is_dir():
        return [path]  # load_interactions names a missing file
    return find_source_files(path, fmt)[1]


def sid_table(sids: dict[str, tuple[int, ...]], items: list[Item]) -> dict:
    """imported_sids.json content for the catalog's items; raises if the SIDs have different lengths."""
    kept = {item.item_id: list(sids[item.item_id]) for item in items if item.item_id in sids}
    if not kept:
        raise ValueError("the imported SIDs name no catalog item: are the SIDs and the catalog from the same dataset?")
    levels = {len(codes) for codes in kept.values()}
    if len(levels) > 1:
        raise ValueError(f"imported SIDs have different lengths {sorted(levels)}: every SID needs the same levels")
    missing = len(items) - len(kept)
    if missing:
        logger.warning("%d of %d catalog items have no imported SID", missing, len(items))
    level_sizes = [max(codes[level] for codes in kept.values()) + 1 for level in range(levels.pop())]
    return {"levels": len(level_sizes), "level_sizes": level_sizes, "items": kept}


def run(args: PrepareArgs) -> Path:
    """Load, validate and split the data; returns the <run>/catalog folder."""
    skips = SkipLog()
    items, interactions, sids, inputs, fmt = load_source(args, skips)
    if args.split == "time" and fmt in UNTIMED_FORMATS:
        raise ValueError(f"--split time needs timestamps, and {fmt} files only give the order: use leave-one-out")
    sequences = build_sequences(interactions, [item.item_id for item in items], skips)
    users_found = len(sequences)
    if 0 < args.max_users < users_found:
        keep = set(random.Random(args.seed).sample(sorted(sequences), args.max_users))
        sequences = {user: events for user, events in sequences.items() if user in keep}
    skips.warn()
    if args.split == "time":
        splits = time_split(sequences, args.max_history, args.valid_fraction, args.test_fraction)
    else:
        splits = leave_one_out({u: [i for i, _ in events] for u, events in sequences.items()}, args.max_history)
    stats = {
        "source": args.source,
        "format": fmt,
        "split": args.split,
        "max_history": args.max_history,
        "items": len(items),
        "items_with_interactions": len({item for events in sequences.values() for item, _ in events}),
        "users": len(sequences),
        "users_before_max_users": users_found,
        "interactions": sum(len(events) for events in sequences.values()),
        "examples": {name: len(rows) for name, rows in splits.items()},
        "skips": skips.to_dict(),
    }
    with RunDir(args.run_dir).building("catalog", config=args, inputs=inputs) as out:
        write_jsonl(out / "items.jsonl", (_item_row(item) for item in items))
        for name, rows in splits.items():
            write_jsonl(out / f"{name}.jsonl", rows)
        if sids:
            table = sid_table(sids, items)
            write_json(out / "imported_sids.json", table)
            stats["imported_sids"] = {"items": len(table["items"]), "level_sizes": table["level_sizes"]}
        write_json(out / "stats.json", stats)
    logger.info(
        "%s: %d items, %d users, %d train / %d valid / %d test examples",
        RunDir(args.run_dir).stage("catalog"), len(items), len(sequences), *stats["examples"].values(),
    )
    return RunDir(args.run_dir).stage("catalog")


def _item_row(item: Item) -> dict:
    return {
        "item_id": item.item_id,
        "title": item.title,
        "description": item.description,
        "brand": item.brand,
        "categories": item.categories,
        "text": item_text(item),
    }


def main(argv: list[str] | None = None, prog: str = "align prepare") -> None:
    (args,) = parse_args((PrepareArgs,), argv, prog=prog, doc=__doc__)
    run(args)
