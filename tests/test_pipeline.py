"""The whole pipeline through the real commands and the cpu_demo recipes, at toy size with a tiny random LM."""

import json
from pathlib import Path

import pytest
import torch
from tiny_run import make_base_model

from align.cli import main
from align.run_dir import read_json, read_jsonl

pytestmark = pytest.mark.slow
RECIPES = Path(__file__).parents[1] / "recipes" / "cpu_demo"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """prepare -> sids -> data -> sft -> rl -> eval on 40 demo items and 60 users."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pipeline")
    run, base = root / "run", make_base_model(root / "base")
    common = ["--run_dir", str(run)]
    steps = [
        ["prepare", str(RECIPES / "prepare.yaml"), *common, "--demo_items", "40", "--demo_users", "60"],
        ["sids", str(RECIPES / "sids.yaml"), *common],
        ["data", str(RECIPES / "data.yaml"), *common, "--max_sft_examples", "64"],
        ["sft", str(RECIPES / "sft.yaml"), *common, "--model_name_or_path", str(base), "--max_steps", "4"],
        ["rl", str(RECIPES / "rl.yaml"), *common, "--max_steps", "1", "--num_generations", "4",
         "--per_device_train_batch_size", "4"],
        ["eval", str(RECIPES / "eval.yaml"), *common, "--max_users", "12", "--batch_size", "4"],
    ]
    try:
        for argv in steps:
            assert main(argv) == 0, argv[0]
    finally:
        torch.set_num_threads(threads)
    return run


def test_every_stage_is_finished_with_its_artifacts(run_dir):
    for stage in ("catalog", "sid", "data", "sft", "rl", "eval"):
        assert (run_dir / stage / "manifest.json").is_file(), stage
    assert not list(run_dir.glob("*.tmp"))
    for checkpoint in ("sft", "rl"):
        names = {p.name for p in (run_dir / checkpoint).iterdir()}
        expected = {"adapter_model.safetensors", "sid_map.json", "model_info.json", "items.jsonl", "prompting.json"}
        assert expected <= names


def test_metrics_json_compares_models_with_baselines(run_dir):
    metrics = read_json(run_dir / "metrics.json")
    keys = {"hr@1", "hr@5", "hr@10", "ndcg@1", "ndcg@5", "ndcg@10"}
    assert keys <= set(metrics["model"]) and metrics["model_name"] == "rl"
    assert set(metrics["models"]) == {"sft", "rl"}
    assert keys <= set(metrics["baselines"]["popularity"]) and keys <= set(metrics["baselines"]["transitions"])
    assert metrics["n_users"] == 12
    sid_items = set(read_json(run_dir / "sid" / "sid_map.json")["items"])
    for row in read_jsonl(run_dir / "eval" / "predictions_rl.jsonl"):
        ranked = [r["item_id"] for r in row["ranked"]]
        assert len(ranked) == 10 and len(set(ranked)) == 10 and set(ranked) <= sid_items


def test_recommend_and_chat_answer_with_catalog_items(run_dir):
    from align.chat import answer
    from align.recommend import RecommendArgs, Recommender, run

    test_row = read_jsonl(run_dir / "catalog" / "test.jsonl")[0]
    recs = run(RecommendArgs(run_dir=str(run_dir), history=",".join(test_row["history"]), k=5, num_beams=8))
    catalog = {row["item_id"]: row["title"] for row in read_jsonl(run_dir / "catalog" / "items.jsonl")}
    assert len(recs) == 5 and all(catalog[r["item_id"]] == r["title"] for r in recs)

    rec = Recommender(str(run_dir / "rl"))
    named = [catalog[item] for item in test_row["history"][-2:]]
    assert rec.match_titles(f"I bought {named[0]} and then {named[1]}, what next?") == test_row["history"][-2:]
    reply = answer(rec, f"I bought {named[0]} and then {named[1]}, what next?", k=3, num_beams=8)
    assert reply.startswith("You mentioned:") and reply.count("\n") == 4
    with pytest.raises(ValueError, match="unknown item id"):
        rec.history_prompt(["no-such-item"])


def test_push_offline_says_so_and_keeps_the_bundle(run_dir, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", "--run_dir", str(run_dir), "--repo_id", "someone/align-demo"]) == 1
    err = capsys.readouterr().err
    assert "could not reach the Hugging Face Hub" in err and "Nothing was pushed" in err
    bundle = run_dir / "push"
    assert (bundle / "adapter_model.safetensors").is_file() and (bundle / "sid_map.json").is_file()
    card = (bundle / "README.md").read_text()
    assert "base_model:" in card and "| popularity |" in card
    assert (run_dir / "rl" / "manifest.json").is_file()  # local artifacts untouched


def test_a_failed_stage_leaves_nothing_half_written(run_dir, tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"item_id": "a", "title": "A"}) + "\n" + json.dumps({"item_id": "a", "title": "B"}))
    inter = tmp_path / "inter.csv"
    inter.write_text("user_id,item_id,timestamp\nu,a,1\nu,a,2\n")
    target = tmp_path / "run"
    assert main(["prepare", "--run_dir", str(target), "--source", str(items), "--interactions", str(inter)]) == 1
    assert "duplicate" in capsys.readouterr().err.lower()
    assert not (target / "catalog").exists() and not (target / "catalog.tmp").exists()
