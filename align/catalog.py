"""Catalog items and user interactions: the data model and the importers.

Formats (`fmt`), auto-detected from the file name and its first record unless given:

    jsonl       items: {"item_id", "title", "description", "brand", "categories", ...}; interactions:
                {"user_id", "item_id", "timestamp"}, one JSON object a line
    csv         the same columns, with a header row
    lcrec       LC-Rec / MiniOneRec JSON: `items.json` / `<name>.item.json` = {item_id: {"title", ...}} and
                `<name>.inter.json` = {user_id: [item ids in time order]}
    minionerec  MiniOneRec CSV rows (history -> target, with SIDs) plus its `.item.json` catalog
    amazon      Amazon review dumps: reviews (`reviewerID`, `asin`, `unixReviewTime`) and metadata
                (`asin`, `title`, ...), JSON lines, gzip or not

Formats without timestamps (lcrec, minionerec) give each user's position in their sequence as the time.
"""

import ast
import csv
import gzip
import html
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv", "lcrec", "minionerec", "amazon")
UNTIMED_FORMATS = ("lcrec", "minionerec")
ITEM_FIELDS = ("item_id", "title", "description", "brand", "categories")
MINIONEREC_COLUMNS = ("user_id", "history_item_id", "item_id", "history_item_sid", "item_sid")
# Alternative key names of the Amazon dumps (2014/2018 and 2023).
AMAZON_KEYS = {
    "user_id": ("reviewerID", "user_id"),
    "item_id": ("asin", "parent_asin"),
    "timestamp": ("unixReviewTime", "timestamp"),
}

Interaction = tuple[str, str, float]  # (user_id, item_id, timestamp)
PathLike = str | os.PathLike


@dataclass(frozen=True)
class Item:
    """One catalog item; `extra` holds any other text fields of the source."""

    item_id: str
    title: str
    description: str = ""
    brand: str = ""
    categories: str = ""
    extra: dict[str, str] = field(default_factory=dict, hash=False)


def item_text(item: Item, max_description: int = 500) -> str:
    """What the SID encoder embeds: the non-empty fields, labelled, the description cut at a word boundary."""
    description = item.description
    if len(description) > max_description:
        description = description[:max_description].rsplit(" ", 1)[0] + " ..."
    parts = [("Title", item.title), ("Brand", item.brand), ("Categories", item.categories)]
    parts.append(("Description", description))
    return "; ".join(f"{label}: {value}" for label, value in parts if value)


class SkipLog:
    """Records skipped records by reason, with a few examples each, for stats.json and one warning per reason."""

    def __init__(self, max_examples: int = 5) -> None:
        self.max_examples = max_examples
        self.reasons: dict[str, dict[str, Any]] = {}

    def add(self, reason: str, example: Any, count: int = 1) -> None:
        entry = self.reasons.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += count
        if len(entry["examples"]) < self.max_examples:
            entry["examples"].append(example)

    def count(self, reason: str) -> int:
        return self.reasons.get(reason, {}).get("count", 0)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {reason: dict(entry) for reason, entry in self.reasons.items()}

    def warn(self) -> None:
        for reason, entry in self.reasons.items():
            examples = ", ".join(map(str, entry["examples"]))
            logger.warning("skipped %d: %s (e.g. %s)", entry["count"], reason, examples)


# ---------------------------------------------------------------- reading records


def _check_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: check the path (relative paths start at {Path.cwd()})")
    if not path.is_file():
        raise ValueError(f"{path} is a folder, not a file: pass the file inside it")
    with _open(path) as f:
        if not f.read(4096).strip():
            raise ValueError(f"{path} is empty: expected catalog items or interactions")
    return path


def _open(path: Path):
    with path.open("rb") as f:
        is_gzip = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if is_gzip else open(path, encoding="utf-8", newline="")


def _parse_line(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        try:  # the 2014 Amazon metadata dumps are Python dict literals
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected one JSON object per line, got {type(record).__name__}")
    return record


def _json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, record) per non-empty line; `where` is "file:line" for error messages."""
    with _open(path) as f:
        for number, line in enumerate(tqdm(f, desc=path.name, unit=" lines", leave=False, disable=None), 1):
            if line.strip():
                where = f"{path}:{number}"
                yield where, _parse_line(line, where)


def _csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[str, dict]]:
    with _open(path) as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; the header is {reader.fieldnames}")
        for row in tqdm(reader, desc=path.name, unit=" rows", leave=False, disable=None):
            yield f"{path}:{reader.line_num}", row


def _load_json(path: Path) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"{path}: duplicate key {dup!r}: item and user ids must be unique")
        return dict(pairs)

    with _open(path) as f:
        try:
            return json.load(f, object_pairs_hook=no_duplicates)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON at line {err.lineno} ({err.msg})") from None


def _text(value: Any) -> str:
    """Flatten a field to one clean line: lists (also "['a', 'b']" strings) are joined, HTML entities decoded."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
    if isinstance(value, list | tuple):
        return " ".join(filter(None, (_text(v) for v in value)))
    return " ".join(html.unescape(str(value)).split())


def _categories(value: Any) -> str:
    """A category path as "A > B > C"; Amazon 2014 lists of paths keep the first."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        value = value[0]
    if isinstance(value, list):
        return " > ".join(filter(None, (_text(v) for v in value)))
    return _text(value)


# ---------------------------------------------------------------- format detection


def detect_format(path: PathLike) -> str:
    """Guess the format of a catalog or interactions file from its name, then from its first record."""
    path = _check_file(path)
    name = path.name.lower()
    if name.endswith((".item.json", ".inter.json")) or name == "items.json":
        return "lcrec"
    if name.endswith((".csv", ".csv.gz")):
        with _open(path) as f:
            header = next(csv.reader(f), [])
        return "minionerec" if "history_item_id" in header else "csv"
    with _open(path) as f:
        first = next((line for line in f if line.strip()), "")
    try:
        record = _parse_line(first, str(path))
    except ValueError:
        record = {}  # a pretty-printed JSON document starts with "{": only LC-Rec files are single documents
        if first.strip() == "{":
            return "lcrec"
    if record and all(isinstance(v, dict | list) for v in record.values()):
        return "lcrec"
    if {"asin", "parent_asin", "reviewerID"} & record.keys():
        return "amazon"
    if "item_id" in record:
        return "jsonl"
    raise ValueError(
        f"{path}: cannot tell its format from the name or the first record (keys {sorted(record)[:8]}); "
        f"pass --format, one of {', '.join(FORMATS)}"
    )


def _resolve_format(path: Path, fmt: str) -> str:
    if fmt == "auto":
        return detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: use auto or one of {', '.join(FORMATS)}")
    return fmt


# ---------------------------------------------------------------- catalog


def load_catalog(
    path: PathLike, fmt: str = "auto", *, allow_missing_titles: bool = False, skips: SkipLog | None = None
) -> list[Item]:
    """Read a catalog file into Items, in file order.

    Args:
        path: items file (see the module docstring for formats).
        fmt: "auto" or one of FORMATS; "minionerec" catalogs are LC-Rec `.item.json` files.
        allow_missing_titles: skip items without a title (counted in `skips`) instead of failing.
        skips: collects skipped records by reason.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty file, unreadable record, item without title, or duplicate item id.
    """
    path = _check_file(path)
    fmt = _resolve_format(path, fmt)
    skips = skips if skips is not None else SkipLog()
    if fmt in ("lcrec", "minionerec"):
        data = _load_json(path)
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError(f"{path}: an LC-Rec catalog is one JSON object {{item_id: {{\"title\": ...}}}}")
        records = ((f"{path}: item {item_id}", {**fields, "item_id": item_id}) for item_id, fields in data.items())
    elif fmt == "csv":
        records = _csv_rows(path, ("item_id", "title"))
    elif fmt == "amazon":
        records = ((where, _amazon_item_record(rec)) for where, rec in _json_lines(path))
    else:
        records = _json_lines(path)
    items, seen = [], {}
    for where, record in records:
        item = _item_from_record(record, where)
        if not item.title:
            if not allow_missing_titles:
                raise ValueError(f"{where}: item {item.item_id} has no title; pass --allow_missing_titles to skip it")
            skips.add("item without title", item.item_id)
            continue
        if item.item_id in seen:
            raise ValueError(f"{where}: duplicate item id {item.item_id!r} (first at {seen[item.item_id]})")
        seen[item.item_id] = where
        items.append(item)
    if not items:
        raise ValueError(f"{path}: no items with a title")
    return items


def _amazon_item_record(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in ("asin", "parent_asin", "category", "main_category")}
    out["item_id"] = record.get("parent_asin") or record.get("asin")
    out["categories"] = record.get("category") or record.get("categories") or record.get("main_category")
    return out


def _item_from_record(record: dict, where: str) -> Item:
    item_id = _text(record.get("item_id"))
    if not item_id:
        raise ValueError(f"{where}: record has no item_id (keys: {', '.join(sorted(record))})")
    extra = {k: _text(v) for k, v in record.items() if k not in ITEM_FIELDS and isinstance(v, str) and v.strip()}
    return Item(
        item_id=item_id,
        title=_text(record.get("title")),
        description=_text(record.get("description")),
        brand=_text(record.get("brand")),
        categories=_categories(record.get("categories")),
        extra=extra,
    )


# ---------------------------------------------------------------- interactions


def load_interactions(paths: PathLike | Sequence[PathLike], fmt: str = "auto") -> list[Interaction]:
    """Read (user_id, item_id, timestamp) triples from one file or several of one format, in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty file, unreadable record or a missing field.
    """
    paths = [_check_file(p) for p in ([paths] if isinstance(paths, str | os.PathLike) else paths)]
    fmt = _resolve_format(paths[0], fmt)
    if fmt == "minionerec":
        return load_minionerec(paths)[0]
    out: list[Interaction] = []
    for path in paths:
        if fmt == "lcrec":
            out += _lcrec_interactions(path)
        elif fmt == "amazon":
            out += [_amazon_interaction(rec, where) for where, rec in _json_lines(path)]
        else:
            records = _csv_rows(path, ("user_id", "item_id")) if fmt == "csv" else _json_lines(path)
            out += [_interaction(rec, where, position) for position, (where, rec) in enumerate(records)]
    if not out:
        raise ValueError(f"{', '.join(map(str, paths))}: no interactions (only a header or empty records)")
    return out


def _lcrec_interactions(path: Path) -> list[Interaction]:
    data = _load_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: an LC-Rec interactions file is one JSON object {{user_id: [item ids]}}")
    return [(str(user), str(item), float(t)) for user, items in data.items() for t, item in enumerate(items)]


def _interaction(record: dict, where: str, position: int) -> Interaction:
    user, item = _text(record.get("user_id")), _text(record.get("item_id"))
    if not user or not item:
        raise ValueError(f"{where}: an interaction needs user_id and item_id (got keys {', '.join(sorted(record))})")
    # Without a timestamp column, file order is the time.
    return user, item, _timestamp(record["timestamp"], where) if "timestamp" in record else float(position)


def _amazon_interaction(record: dict, where: str) -> Interaction:
    values = {}
    for name, keys in AMAZON_KEYS.items():
        key = next((k for k in keys if record.get(k) not in (None, "")), None)
        if key is None:
            raise ValueError(f"{where}: an Amazon review needs one of {', '.join(keys)}")
        values[name] = record[key]
    return str(values["user_id"]), str(values["item_id"]), _timestamp(values["timestamp"], where)


def _timestamp(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(str(value).strip()).timestamp()
    except ValueError:
        raise ValueError(f"{where}: timestamp {value!r} is neither a number nor an ISO date") from None


def load_minionerec(paths: PathLike | Sequence[PathLike]) -> tuple[list[Interaction], dict[str, tuple[int, ...]]]:
    """Rebuild per-user sequences from MiniOneRec CSV rows, and collect the SIDs the rows carry.

    Each row is one example, history + target: a window of the user's sequence ending at the target. A user's
    windows are merged longest-last (rows that are prefixes of each other give the longest one; capped sliding
    windows are joined on their overlap), so the sequence is as long as the rows allow.

    Returns:
        Interactions with the position in the sequence as timestamp, and {item_id: SID codes}.
    """
    paths = [_check_file(p) for p in ([paths] if isinstance(paths, str | os.PathLike) else paths)]
    windows: dict[str, list[list[str]]] = {}
    sids: dict[str, tuple[int, ...]] = {}
    for path in paths:
        for where, row in _csv_rows(path, MINIONEREC_COLUMNS):
            window = [str(i) for i in _literal_list(row["history_item_id"], where, "history_item_id")]
            window.append(row["item_id"].strip())
            window_sids = [*_literal_list(row["history_item_sid"], where, "history_item_sid"), row["item_sid"]]
            if len(window_sids) != len(window):
                raise ValueError(f"{where}: history_item_id and history_item_sid have different lengths")
            for item, sid in zip(window, window_sids, strict=True):
                _add_sid(sids, item, sid, where)
            windows.setdefault(row["user_id"], []).append(window)
    interactions = []
    for user, rows in windows.items():
        sequence = _merge_windows(rows)
        interactions += [(user, item, float(t)) for t, item in enumerate(sequence)]
    return interactions, sids


def _merge_windows(windows: list[list[str]]) -> list[str]:
    sequence: list[str] = []
    for window in sorted(windows, key=len):  # stable: equal-length (capped) windows keep file order
        if _contains(sequence, window):
            continue
        longest = min(len(sequence), len(window))
        overlap = max((k for k in range(1, longest + 1) if sequence[-k:] == window[:k]), default=0)
        sequence += window[overlap:]
    return sequence


def _contains(sequence: list[str], window: list[str]) -> bool:
    n = len(window)
    return any(sequence[i : i + n] == window for i in range(len(sequence) - n + 1))


def _literal_list(value: str, where: str, column: str) -> list:
    try:
        parsed = ast.literal_eval(value) if value.strip() else []
    except (ValueError, SyntaxError):
        parsed = None
    if not isinstance(parsed, list | tuple):
        raise ValueError(f"{where}: column {column} should be a Python list like \"[1, 2]\", got {value[:60]!r}")
    return list(parsed)


def _add_sid(sids: dict[str, tuple[int, ...]], item: str, sid: Any, where: str) -> None:
    from align.tokens import parse_sid  # align.tokens imports torch: only pay for it when SIDs are read

    text = "".join(sid) if isinstance(sid, list | tuple) else str(sid)
    codes = parse_sid(text)
    if codes is None:
        raise ValueError(f"{where}: item {item} has SID {text!r}, which is not like \"<a_1><b_2><c_3>\"")
    if sids.setdefault(item, codes) != codes:
        raise ValueError(f"{where}: item {item} has two SIDs, {sids[item]} and {codes}: the file is inconsistent")


def load_sid_index(path: PathLike) -> dict[str, tuple[int, ...]]:
    """Read an LC-Rec / MiniOneRec SID index {item_id: ["<a_1>", "<b_2>", ...]} (or "<a_1><b_2>...")."""
    path = _check_file(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a SID index is one JSON object {{item_id: [\"<a_1>\", \"<b_2>\", ...]}}")
    sids: dict[str, tuple[int, ...]] = {}
    for item, sid in data.items():
        _add_sid(sids, str(item), sid, f"{path}: item {item}")
    return sids


# ---------------------------------------------------------------- sequences


def build_sequences(
    interactions: Sequence[Interaction], item_ids: Sequence[str] | set[str], skips: SkipLog
) -> dict[str, list[tuple[str, float]]]:
    """Per user, the (item_id, timestamp) pairs sorted by time; ties keep file order.

    Interactions with items outside the catalog and users left with one interaction are skipped and counted in
    `skips` (call `skips.warn()` to report them).

    Raises:
        ValueError: no interaction names a catalog item, or no user has two interactions.
    """
    known = set(item_ids)
    by_user: dict[str, list[tuple[str, float]]] = {}
    unknown = []
    for user, item, timestamp in interactions:
        if item not in known:
            unknown.append(f"{user}->{item}")
            skips.add("interaction with an item not in the catalog", unknown[-1])
            continue
        by_user.setdefault(user, []).append((item, timestamp))
    if interactions and len(unknown) == len(interactions):
        raise ValueError(
            f"none of the {len(unknown)} interactions names a catalog item (e.g. {', '.join(unknown[:3])}): "
            "are the catalog and the interactions from the same dataset?"
        )
    sequences = {}
    for user, events in by_user.items():
        if len(events) < 2:
            skips.add("user with a single interaction (no train/valid/test example)", user)
            continue
        sequences[user] = sorted(events, key=lambda event: event[1])
    if not sequences:
        raise ValueError("no user has two or more interactions with catalog items: nothing to train or test on")
    return sequences
