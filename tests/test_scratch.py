from pathlib import Path

import pytest
import torch

from align.baselines import popularity
from align.metrics import ranking_metrics
from align.run_dir import RunDir, read_json, write_json, write_jsonl
from align.scratch import (
    BOS_ID,
    ScratchArgs,
    ScratchScorer,
    SequenceEncoder,
    load_scratch,
    main,
    run,
    sid_vocab,
    train_scratch,
)
from tests.test_sasrec import ITEMS, cycle_rows, evaluate_with_a_stub_model, make_catalog

# item i{k} has the SID (k // 5, k % 5): 4 x 5 codes, every item unique
SID_MAP = {"levels": 2, "level_sizes": [4, 5], "items": {item: [k // 5, k % 5] for k, item in enumerate(ITEMS)}}
FAST = dict(hidden=32, heads=2, layers=1, lr=1e-2, batch_size=64, dropout=0.0, num_beams=10, device="cpu")
PATHS = (Path("train.jsonl"), Path("valid.jsonl"))


def make_run(root: Path) -> RunDir:
    run_dir = make_catalog(root)
    with run_dir.building("sid") as out:
        write_json(out / "sid_map.json", SID_MAP)
    return run_dir


def test_vocabulary_and_prompts():
    vocab = sid_vocab([4, 5])
    assert vocab.first_ids == (2, 6) and vocab.ids([3, 4]) == [5, 10]
    encoder = SequenceEncoder(SID_MAP, vocab, max_history=2)
    assert encoder.prompt(["i0", "gone", "i6", "i7"]) == ([BOS_ID, 3, 7, 3, 8], 1)  # latest 2 known items
    ids, labels = encoder.train_example({"history": ["i1"], "target": "i2"}, PATHS[0])
    assert ids == [BOS_ID, 2, 7, 2, 8] and labels == [-100, -100, -100, 2, 8]


def test_learns_a_sequence_pattern_that_popularity_cannot():
    train, test = cycle_rows(300, 0), cycle_rows(60, 2)
    args = ScratchArgs(epochs=15, patience=0, **FAST)
    model, vocab, summary = train_scratch(SID_MAP, train, cycle_rows(40, 1), args, PATHS)
    ranked = ScratchScorer(model, SID_MAP, vocab, max_history=10).rank([row["history"] for row in test], 10)
    targets = [row["target"] for row in test]
    assert all(len(row) == len(set(row)) == 10 and set(row) <= set(ITEMS) for row in ranked)
    assert ranking_metrics(ranked, targets, ks=(1,))["hr@1"] >= 0.9
    assert ranking_metrics(popularity(train, test, 10), targets, ks=(1,))["hr@1"] < 0.2
    assert summary["valid"]["ndcg@10"] >= 0.9 and 1 <= summary["best_epoch"] <= summary["epochs_run"] == 15


def test_stage_writes_its_folder_and_round_trips(tmp_path):
    run_dir = make_run(tmp_path / "run")
    out = run(ScratchArgs(run_dir=str(run_dir.root), epochs=2, **FAST))
    assert out == run_dir.stage("scratch") and run_dir.is_done("scratch")
    assert {"config.json", "model.safetensors", "scratch.json", "sid_map.json", "manifest.json"} <= {
        p.name for p in out.iterdir()
    }
    info = read_json(out / "scratch.json")
    assert info["epochs_run"] == 2 and info["vocab"] == {"level_sizes": [4, 5], "first_ids": [2, 6]}
    assert read_json(out / "sid_map.json") == SID_MAP

    scorer = load_scratch(out)
    histories = [["i1", "i2"], [], ["i5"] * 30]
    tokens = [scorer.encoder.prompt(h)[0] for h in histories]
    logits = scorer.model(torch.tensor([tokens[0]])).logits[0, -1]
    first_level = logits[2:6].argmax().item()
    assert scorer.rank(histories, 3)[0][0] in [ITEMS[first_level * 5 + c] for c in range(5)]


def test_bad_input_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="align prepare --run_dir"):
        run(ScratchArgs(run_dir=str(tmp_path / "empty")))
    run_dir = make_catalog(tmp_path / "nosid")
    with pytest.raises(FileNotFoundError, match="align sids --run_dir"):
        run(ScratchArgs(run_dir=str(run_dir.root)))
    run_dir = make_run(tmp_path / "run")
    write_jsonl(run_dir.stage("catalog") / "train.jsonl", [{"user_id": "u7", "history": ["i1"], "target": "zz"}])
    with pytest.raises(ValueError, match=r"target 'zz' of user 'u7' has no SID"):
        run(ScratchArgs(run_dir=str(run_dir.root), epochs=1, **FAST))
    assert not run_dir.stage("scratch").exists()
    with pytest.raises(ValueError, match="must divide"):
        ScratchArgs(hidden=10, heads=3)
    with pytest.raises(FileNotFoundError, match="rerun `align scratch`"):
        load_scratch(tmp_path)


def test_eval_reports_the_scratch_model_beside_the_counting_baselines(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "run")
    main(["--run_dir", str(run_dir.root), "--epochs", "2", "--hidden", "32", "--heads", "2", "--layers", "1",
          "--device", "cpu"])
    test_rows, result = evaluate_with_a_stub_model(run_dir, monkeypatch)
    ranked = load_scratch(run_dir.stage("scratch")).rank([row["history"] for row in test_rows], 10)
    expected = ranking_metrics(ranked, [row["target"] for row in test_rows], ks=(1, 5, 10))
    assert list(result["baselines"]) == ["popularity", "transitions", "sid-scratch"]
    assert result["baselines"]["sid-scratch"] == expected


def test_eval_of_baselines_only(tmp_path):
    import align.eval as evaluation

    run_dir = make_run(tmp_path / "run")
    test_rows = [row | {"prompt": [], "target_item": row["target"]} for row in cycle_rows(40, 2)]
    with run_dir.building("data") as out:
        write_jsonl(out / "test.jsonl", test_rows)
    evaluation.run(evaluation.EvalArgs(run_dir=str(run_dir.root), models="", baselines="transitions", num_beams=10))
    result = read_json(run_dir.root / "metrics.json")
    assert result["models"] == {} and "model" not in result and list(result["baselines"]) == ["transitions"]
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluation.run(evaluation.EvalArgs(run_dir=str(run_dir.root), models="", baselines="", num_beams=10))
