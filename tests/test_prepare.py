import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from align.data.prepare import PrepareArgs, find_source_files, leave_one_out, main, run, time_split
from align.run_dir import read_json, read_jsonl

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cpu_demo" / "prepare.yaml"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_leave_one_out_on_hand_made_sequences():
    splits = leave_one_out({"u": ["a", "b", "c", "d", "e"], "v": ["x", "y"], "w": ["p", "q", "r"]}, max_history=2)
    assert splits == {
        "train": [
            {"user_id": "u", "history": ["a"], "target": "b"},
            {"user_id": "u", "history": ["a", "b"], "target": "c"},
        ],
        "valid": [
            {"user_id": "u", "history": ["b", "c"], "target": "d"},
            {"user_id": "w", "history": ["p"], "target": "q"},
        ],
        "test": [
            {"user_id": "u", "history": ["c", "d"], "target": "e"},
            {"user_id": "v", "history": ["x"], "target": "y"},
            {"user_id": "w", "history": ["p", "q"], "target": "r"},
        ],
    }


@given(st.dictionaries(st.text("uvw", min_size=1), st.lists(st.sampled_from("abcde"), min_size=2, max_size=15)),
       st.integers(1, 4))
def test_leave_one_out_property(sequences, max_history):
    splits = leave_one_out(sequences, max_history)
    assert [row["user_id"] for row in splits["test"]] == list(sequences)
    assert [row["user_id"] for row in splits["valid"]] == [u for u, items in sequences.items() if len(items) >= 3]
    assert len(splits["train"]) == sum(max(0, len(items) - 3) for items in sequences.values())
    for row in splits["train"] + splits["valid"] + splits["test"]:
        items = sequences[row["user_id"]]
        window = row["history"] + [row["target"]]
        assert 1 <= len(row["history"]) <= max_history
        assert any(items[i : i + len(window)] == window for i in range(len(items)))


def test_time_split_orders_examples_by_target_time():
    sequences = {"u": [("a", 1), ("b", 5), ("c", 9)], "v": [("x", 0), ("y", 2), ("z", 7), ("a", 8), ("b", 10)]}
    splits = time_split(sequences, max_history=3, valid_fraction=1 / 6, test_fraction=2 / 6)
    # Targets by time: y@2, b@5, z@7, a@8, c@9, b@10 -> 3 train, 1 valid, 2 test.
    assert splits == {
        "train": [
            {"user_id": "v", "history": ["x"], "target": "y"},
            {"user_id": "u", "history": ["a"], "target": "b"},
            {"user_id": "v", "history": ["x", "y"], "target": "z"},
        ],
        "valid": [{"user_id": "v", "history": ["x", "y", "z"], "target": "a"}],
        "test": [
            {"user_id": "u", "history": ["a", "b"], "target": "c"},
            {"user_id": "v", "history": ["y", "z", "a"], "target": "b"},
        ],
    }


def test_run_on_the_demo_data(tmp_path):
    out = run(PrepareArgs(run_dir=str(tmp_path / "run"), demo_items=60, demo_users=40, max_history=4))
    assert out == tmp_path / "run" / "catalog"
    assert sorted(p.name for p in out.iterdir()) == [
        "items.jsonl", "manifest.json", "stats.json", "test.jsonl", "train.jsonl", "valid.jsonl"
    ]
    items = read_jsonl(out / "items.jsonl")
    assert len(items) == 60
    assert set(items[0]) == {"item_id", "title", "description", "brand", "categories", "text"}
    assert items[0]["text"].startswith(f"Title: {items[0]['title']}; Brand: {items[0]['brand']}")
    stats = read_json(out / "stats.json")
    test = read_jsonl(out / "test.jsonl")
    assert len(test) == len({row["user_id"] for row in test}) == stats["users"] == 40
    for name in ("train", "valid", "test"):
        rows = read_jsonl(out / f"{name}.jsonl")
        assert stats["examples"][name] == len(rows)
        assert all(1 <= len(row["history"]) <= 4 for row in rows)
    assert stats["interactions"] == sum(stats["examples"].values()) + stats["users"]
    assert read_json(out / "manifest.json")["config"]["demo_items"] == 60


def test_run_on_a_folder_with_skips_and_a_time_split(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "items.jsonl", [{"item_id": i, "title": f"Item {i}"} for i in "abcd"] + [{"item_id": "e"}])
    events = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "c"), ("u2", "d"), ("u2", "zz"), ("u3", "a"), ("u4", "e")]
    write_jsonl(data / "interactions.jsonl",
                [{"user_id": u, "item_id": i, "timestamp": t} for t, (u, i) in enumerate(events)])
    args = PrepareArgs(run_dir=str(tmp_path / "run"), source=str(data), split="time", allow_missing_titles=True,
                       valid_fraction=0.25, test_fraction=0.25)
    out = run(args)
    stats = read_json(out / "stats.json")
    assert (stats["items"], stats["users"], stats["interactions"], stats["format"]) == (4, 2, 5, "jsonl")
    assert {reason: entry["count"] for reason, entry in stats["skips"].items()} == {
        "item without title": 1,
        "interaction with an item not in the catalog": 2,  # u2 -> zz and u4 -> e (e was dropped)
        "user with a single interaction (no train/valid/test example)": 1,  # u3
    }
    # Examples by target time: u1 b@1, u1 c@2, u2 d@4.
    assert [row["target"] for name in ("train", "valid", "test") for row in read_jsonl(out / f"{name}.jsonl")] == [
        "b", "c", "d"
    ]
    assert stats["examples"] == {"train": 1, "valid": 1, "test": 1}


def test_run_keeps_minionerec_sids(tmp_path):
    data = tmp_path / "mini"
    data.mkdir()
    (data / "Tools.item.json").write_text(json.dumps({str(i): {"title": f"T{i}"} for i in range(4)}))
    header = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"
    rows = ['u,"[]",t,"[0, 1]",2,"[\'<a_0><b_1>\', \'<a_1><b_1>\']",<a_1><b_3>\n',
            'v,"[]",t,"[2]",3,"[\'<a_1><b_3>\']",<a_2><b_0>\n']
    (data / "test.csv").write_text(header + "".join(rows))
    assert find_source_files(data, "minionerec") == (data / "Tools.item.json", [data / "test.csv"])
    out = run(PrepareArgs(run_dir=str(tmp_path / "run"), source=str(data)))
    assert read_json(out / "imported_sids.json") == {
        "levels": 2,
        "level_sizes": [3, 4],
        "items": {"0": [0, 1], "1": [1, 1], "2": [1, 3], "3": [2, 0]},
    }
    assert read_jsonl(out / "test.jsonl") == [
        {"user_id": "u", "history": ["0", "1"], "target": "2"},
        {"user_id": "v", "history": ["2"], "target": "3"},
    ]
    with pytest.raises(ValueError, match="--split time needs timestamps"):
        run(PrepareArgs(run_dir=str(tmp_path / "run2"), source=str(data), split="time"))


def test_bad_input_leaves_no_catalog_folder(tmp_path):
    run_dir = tmp_path / "run"
    items = write_jsonl(tmp_path / "items.jsonl", [{"item_id": "a", "title": "A"}, {"item_id": "b", "title": "B"}])
    good = write_jsonl(tmp_path / "good.jsonl", [{"user_id": "u", "item_id": i, "timestamp": 0} for i in "ab"])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"user_id": "u", "item_id": "q", "timestamp": 0}])
    with pytest.raises(ValueError, match="none of the 1 interactions names a catalog item"):
        run(PrepareArgs(run_dir=str(run_dir), source=str(items), interactions=str(bad)))
    assert not run_dir.exists() or not any(run_dir.iterdir())
    with pytest.raises(ValueError, match="is a file: pass its interactions"):
        run(PrepareArgs(run_dir=str(run_dir), source=str(items)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no catalog file"):
        run(PrepareArgs(run_dir=str(run_dir), source=str(empty)))
    # Fails inside the stage folder's build: the temporary folder is removed too.
    sids = tmp_path / "other.index.json"
    sids.write_text(json.dumps({"zz": ["<a_1>", "<b_2>"]}))
    with pytest.raises(ValueError, match="the imported SIDs name no catalog item"):
        run(PrepareArgs(run_dir=str(run_dir), source=str(items), interactions=str(good), sids=str(sids)))
    assert not any(run_dir.iterdir())
    # A failed rerun leaves the previous result untouched.
    out = run(PrepareArgs(run_dir=str(run_dir), source=str(items), interactions=str(good)))
    before = (out / "test.jsonl").read_text()
    with pytest.raises(FileNotFoundError, match="missing.jsonl not found"):
        run(PrepareArgs(run_dir=str(run_dir), source=str(items), interactions=str(tmp_path / "missing.jsonl")))
    assert (out / "test.jsonl").read_text() == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["catalog"]


@pytest.mark.parametrize("field, value", [("split", "random"), ("format", "xml"), ("max_history", 0)])
def test_args_are_validated(field, value):
    with pytest.raises(ValueError, match=f"--{field}"):
        PrepareArgs(**{field: value})


def test_main_runs_the_recipe(tmp_path):
    main(["--config", str(RECIPE), "--run_dir", str(tmp_path / "demo"), "--demo_users", "30", "--demo_items", "50"])
    stats = read_json(tmp_path / "demo" / "catalog" / "stats.json")
    assert (stats["source"], stats["items"], stats["users"]) == ("demo", 50, 30)
    assert "align prepare recipes/cpu_demo/prepare.yaml" in RECIPE.read_text().splitlines()[3]
