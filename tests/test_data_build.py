"""The `align data` stage on a hand-made run directory (catalog/ and sid/ written by hand)."""

import json
from pathlib import Path

import pytest

from align.data.build import DataArgs, main, run
from align.run_dir import read_json, read_jsonl
from align.testing import tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
# i5 has no title: sid2title/title2sid skip it, and titles2sid skips u3's train row (its only history item is i5).
ITEMS = [
    {
        "item_id": f"i{k}",
        "title": f"Title {k}",
        "description": f"About {k}",
        "brand": "B",
        "categories": "C",
        "text": "",
    }
    for k in range(1, 5)
] + [{"item_id": "i5", "title": "", "description": "", "brand": "", "categories": "", "text": ""}]
CODES = {"i1": [1, 0], "i2": [2, 0], "i3": [0, 1], "i4": [1, 1], "i5": [2, 1]}
TRAIN = [
    {"user_id": "u1", "history": ["i1"], "target": "i2"},
    {"user_id": "u1", "history": ["i1", "i2"], "target": "i3"},
    {"user_id": "u2", "history": ["i3"], "target": "i4"},
    {"user_id": "u3", "history": ["i5"], "target": "i1"},
]
VALID = [
    {"user_id": "u1", "history": ["i1", "i2", "i3"], "target": "i4"},
    {"user_id": "u2", "history": ["i3", "i4"], "target": "i5"},
]
TEST = [
    {"user_id": "u1", "history": ["i1", "i2", "i3", "i4"], "target": "i5"},
    {"user_id": "u2", "history": ["i3", "i4", "i5"], "target": "i1"},
]


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    root = tmp_path / "run"
    for stage in ("catalog", "sid"):
        (root / stage).mkdir(parents=True)
        (root / stage / "manifest.json").write_text("{}")
    for name, rows in (("items", ITEMS), ("train", TRAIN), ("valid", VALID), ("test", TEST)):
        write_rows(root / "catalog" / f"{name}.jsonl", rows)
    sid_map = {"levels": 2, "level_sizes": [3, 2], "items": CODES}
    (root / "sid" / "sid_map.json").write_text(json.dumps(sid_map))
    return root


def read_data(root: Path) -> dict[str, list[dict]]:
    return {name: read_jsonl(root / "data" / f"{name}.jsonl") for name in ("sft", "grpo", "valid", "test")}


def test_stage_writes_every_file_with_hand_computed_counts_and_shapes(run_dir):
    out = run(DataArgs(run_dir=str(run_dir), max_history=2))
    assert out == run_dir / "data" and (out / "manifest.json").is_file()
    data = read_data(run_dir)
    stats = read_json(out / "stats.json")
    assert stats["examples"] == {
        "sft": {"seqrec": 4, "titles2sid": 3, "sid2title": 4, "title2sid": 4},
        "grpo": {"seqrec": 4},
        "valid": {"seqrec": 2},
        "test": {"seqrec": 2},
    }
    assert stats["skipped"] == {
        "sft": {"titles2sid: empty history_titles": 1, "sid2title: empty title": 1, "title2sid: empty title": 1}
    }
    system = {"role": "system", "content": "You recommend items by their IDs."}
    for row in data["sft"]:
        assert set(row) == {"prompt", "completion", "task", "target"}
        assert row["prompt"][0] == system and row["prompt"][1]["role"] == "user"
        assert row["completion"] == [{"role": "assistant", "content": row["target"]}]
    sid2title = {row["prompt"][1]["content"]: row["target"] for row in data["sft"] if row["task"] == "sid2title"}
    assert sorted(sid2title.values()) == ["Title 1", "Title 2", "Title 3", "Title 4"]
    assert data["grpo"][1] == {
        "prompt": [system, {"role": "user", "content": "History: <a_1><b_0><a_2><b_0>. Next item?"}],
        "task": "seqrec",
        "target": "<a_0><b_1>",
        "target_item": "i3",
        "history": ["i1", "i2"],  # item ids, for rewards that read the history (cf)
    }
    # max_history=2 shows the last two items; the row keeps the whole history.
    assert data["test"][0] == {
        "prompt": [system, {"role": "user", "content": "History: <a_0><b_1><a_1><b_1>. Next item?"}],
        "task": "seqrec",
        "target": "<a_2><b_1>",
        "target_item": "i5",
        "user_id": "u1",
        "history": ["i1", "i2", "i3", "i4"],
    }
    assert [row["user_id"] for row in data["valid"]] == ["u1", "u2"]
    assert read_json(out / "manifest.json")["config"]["tasks"] == "seqrec,titles2sid,sid2title,title2sid"


def test_rows_fit_the_chat_template_and_load_with_datasets(run_dir):
    from datasets import load_dataset

    run(DataArgs(run_dir=str(run_dir), system_prompt=""))
    data = read_data(run_dir)
    row = next(row for row in data["sft"] if row["task"] == "title2sid")
    assert [m["role"] for m in row["prompt"]] == ["user"]  # empty system prompt: no system message
    tokenizer = tiny_tokenizer()
    text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    assert text == (
        f"<|im_start|>user\n{row['prompt'][0]['content']}<|im_end|>\n"
        f"<|im_start|>assistant\n{row['target']}<|im_end|>\n"
    )
    for name, columns in (("sft", 4), ("grpo", 5), ("test", 6)):
        dataset = load_dataset("json", data_files=str(run_dir / "data" / f"{name}.jsonl"), split="train")
        assert len(dataset) == len(data[name]) and len(dataset.column_names) == columns


def test_same_seed_same_files_other_seed_other_order(run_dir, tmp_path):
    run(DataArgs(run_dir=str(run_dir), seed=1))
    first = read_data(run_dir)
    run(DataArgs(run_dir=str(run_dir), seed=1))
    assert read_data(run_dir) == first
    run(DataArgs(run_dir=str(run_dir), seed=2))
    other = read_data(run_dir)
    assert other["sft"] != first["sft"]
    # The same examples (task, answer), only paraphrases and order differ.
    assert sorted((r["task"], r["target"]) for r in other["sft"]) == sorted(
        (r["task"], r["target"]) for r in first["sft"]
    )
    # grpo and eval use the canonical prompt only: the seed cannot change them.
    assert {name: other[name] for name in ("grpo", "valid", "test")} == {
        name: first[name] for name in ("grpo", "valid", "test")
    }


def test_max_sft_examples_keeps_a_seeded_subset(run_dir):
    run(DataArgs(run_dir=str(run_dir), seed=3))
    full = read_data(run_dir)["sft"]
    run(DataArgs(run_dir=str(run_dir), seed=3, max_sft_examples=5))
    subset = read_data(run_dir)["sft"]
    assert subset == full[:5]  # the same shuffle, cut
    stats = read_json(run_dir / "data" / "stats.json")
    assert stats["sft_before_subset"] == 15 and sum(stats["examples"]["sft"].values()) == 5
    assert len(read_data(run_dir)["grpo"]) == 4  # only sft is subset


def test_item_tasks_repeat_uses_distinct_paraphrases(run_dir):
    run(DataArgs(run_dir=str(run_dir), tasks="sid2title", item_tasks_repeat=3))
    rows = read_data(run_dir)["sft"]
    assert len(rows) == 4 * 3
    by_title: dict[str, set[str]] = {}
    for row in rows:
        by_title.setdefault(row["target"], set()).add(row["prompt"][1]["content"])
    assert all(len(prompts) == 3 for prompts in by_title.values())
    assert read_data(run_dir)["grpo"] == []  # sid2title feeds sft only


def test_sequence_item_without_sid_is_a_clear_error_and_leaves_no_folder(run_dir):
    write_rows(
        run_dir / "catalog" / "train.jsonl", [*TRAIN, {"user_id": "u9", "history": ["i1", "i77"], "target": "i2"}]
    )
    with pytest.raises(ValueError, match=r"train.jsonl: user 'u9' refers to item 'i77', which has no SID"):
        run(DataArgs(run_dir=str(run_dir)))
    assert not (run_dir / "data").exists() and not (run_dir / "data.tmp").exists()


def test_missing_inputs_say_which_command_to_run(run_dir):
    (run_dir / "sid" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"sid is unfinished .*run `align sids --run_dir"):
        run(DataArgs(run_dir=str(run_dir)))
    (run_dir / "sid" / "manifest.json").write_text("{}")
    sid_map = read_json(run_dir / "sid" / "sid_map.json")
    del sid_map["items"]["i4"]
    (run_dir / "sid" / "sid_map.json").write_text(json.dumps(sid_map))
    with pytest.raises(ValueError, match=r"sid_map.json: catalog item 'i4' has no SID \(1 items lack one\)"):
        run(DataArgs(run_dir=str(run_dir)))
    with pytest.raises(ValueError, match="max_history must be >= 1"):
        DataArgs(run_dir=str(run_dir), max_history=0)


def test_cli_recipe_parses_and_overrides(run_dir):
    main(["--config", str(REPO / "recipes/cpu_demo/data.yaml"), "--run_dir", str(run_dir), "--tasks", "seqrec"])
    manifest = read_json(run_dir / "data" / "manifest.json")
    assert manifest["config"]["run_dir"] == str(run_dir) and manifest["config"]["max_history"] == 5
    assert read_json(run_dir / "data" / "stats.json")["examples"]["sft"] == {"seqrec": 4}
