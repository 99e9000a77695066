import json

import pytest

from align.run_dir import RunDir


def test_building_moves_into_place_with_manifest_last(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.building("catalog", config={"a": 1}, inputs=["x"]) as out:
        (out / "items.jsonl").write_text("{}\n")
        assert not run.is_done("catalog")
    assert run.is_done("catalog")
    manifest = json.loads((run.stage("catalog") / "manifest.json").read_text())
    assert manifest["stage"] == "catalog" and manifest["config"] == {"a": 1} and "torch" in manifest["versions"]
    assert not (tmp_path / "run" / "catalog.tmp").exists()


def test_failed_stage_leaves_previous_result_and_no_tmp(tmp_path):
    run = RunDir(tmp_path)
    with run.building("sid") as out:
        (out / "sid_map.json").write_text("old")
    with pytest.raises(RuntimeError):
        with run.building("sid") as out:
            (out / "sid_map.json").write_text("half")
            raise RuntimeError("boom")
    assert (run.stage("sid") / "sid_map.json").read_text() == "old"
    assert not (tmp_path / "sid.tmp").exists()


def test_require_names_the_command(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(FileNotFoundError, match="align prepare --run_dir"):
        run.require("sid")  # the earliest missing stage is named, not just the one asked for
    for stage in ("catalog", "sid", "data"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "manifest.json").write_text("{}")
    (tmp_path / "sft").mkdir()
    with pytest.raises(FileNotFoundError, match="sft is unfinished.*align sft --run_dir"):
        run.require("sft")
    with pytest.raises(FileNotFoundError, match="no trained model"):
        run.latest_model()
