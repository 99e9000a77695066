import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from align.baselines import popularity
from align.metrics import ranking_metrics
from align.run_dir import RunDir, read_json, write_jsonl
from align.sasrec import (
    SASRec,
    SASRecArgs,
    SASRecConfig,
    SASRecScorer,
    encode_histories,
    load_sasrec,
    main,
    rank_metrics,
    run,
    train_sasrec,
)

N_ITEMS = 20
ITEMS = [f"i{k}" for k in range(N_ITEMS)]
# Small and fast; a high learning rate learns the cycle in a few epochs.
FAST = dict(hidden=32, heads=2, layers=1, lr=1e-2, batch_size=64, dropout=0.1, device="cpu")


def cycle_rows(n_users: int, seed: int) -> list[dict]:
    """Users walk the catalog in a cycle, i_k -> i_(k+1): the next item is a function of the last one."""
    rng = random.Random(seed)
    rows = []
    for user in range(n_users):
        start, length = rng.randrange(N_ITEMS), rng.randrange(1, 6)
        seq = [ITEMS[(start + j) % N_ITEMS] for j in range(length + 1)]
        rows.append({"user_id": f"u{user}", "history": seq[:-1], "target": seq[-1]})
    return rows


def make_catalog(root: Path) -> RunDir:
    run_dir = RunDir(root)
    with run_dir.building("catalog") as out:
        write_jsonl(out / "items.jsonl", [{"item_id": item, "title": item} for item in ITEMS])
        for name, (n, seed) in {"train": (300, 0), "valid": (40, 1), "test": (40, 2)}.items():
            write_jsonl(out / f"{name}.jsonl", cycle_rows(n, seed))
    return run_dir


def test_learns_a_sequence_pattern_that_popularity_cannot():
    train, test = cycle_rows(300, 0), cycle_rows(60, 2)
    model, summary = train_sasrec(
        ITEMS,
        train,
        cycle_rows(40, 1),
        SASRecArgs(epochs=12, patience=0, **FAST),
        (Path("train.jsonl"), Path("valid.jsonl")),
    )
    ranked = SASRecScorer(model, ITEMS).rank([row["history"] for row in test], 10)
    targets = [row["target"] for row in test]
    assert ranking_metrics(ranked, targets, ks=(1,))["hr@1"] >= 0.95
    assert ranking_metrics(popularity(train, test, 10), targets, ks=(1,))["hr@1"] < 0.2
    assert summary["valid"]["ndcg@10"] >= 0.95 and 1 <= summary["best_epoch"] <= summary["epochs_run"] == 12


def test_early_stopping_keeps_the_best_epoch():
    _, summary = train_sasrec(
        ITEMS,
        cycle_rows(300, 0),
        cycle_rows(40, 1),
        SASRecArgs(epochs=50, patience=2, **FAST),
        (Path("train.jsonl"), Path("valid.jsonl")),
    )
    # The cycle is learnt perfectly early; NDCG cannot beat 1.0, so training stops `patience` epochs later.
    assert summary["valid"]["ndcg@10"] == 1.0
    assert summary["epochs_run"] == summary["best_epoch"] + 2 < 50


def test_stage_writes_its_folder_and_round_trips(tmp_path):
    run_dir = make_catalog(tmp_path / "run")
    out = run(SASRecArgs(run_dir=str(run_dir.root), epochs=3, **FAST))
    assert out == run_dir.stage("sasrec") and run_dir.is_done("sasrec")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "items.json", "manifest.json", "model.pt"]
    config = read_json(out / "config.json")
    assert config["n_items"] == N_ITEMS and config["hidden"] == 32 and config["epochs_run"] == 3
    assert read_json(out / "items.json") == ITEMS
    assert read_json(out / "manifest.json")["config"]["epochs"] == 3

    scorer = load_sasrec(out)
    model = SASRec(SASRecConfig(N_ITEMS, hidden=32, layers=1, heads=2))
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    histories = [["i1", "i2"], [], ["i5"] * 30]
    expected = model.eval()(encode_histories(histories, scorer.index, 10)[0])
    assert torch.allclose(scorer.logits(histories), expected)
    assert scorer.rank(histories, 3) == [[ITEMS[i] for i in row] for row in expected.topk(3).indices.tolist()]


def test_score_is_the_catalog_softmax_of_each_candidate():
    torch.manual_seed(0)
    scorer = SASRecScorer(SASRec(SASRecConfig(N_ITEMS, hidden=16, layers=1, heads=2, max_len=4)), ITEMS)
    probs = scorer.logits([["i1", "i2"], ["i3"]]).softmax(1)
    assert torch.allclose(probs.sum(1), torch.ones(2))
    got = scorer.score([["i1", "i2"], ["i3"], ["i1", "i2"], ["i3"]], ["i4", "i0", None, "not-an-item"])
    assert torch.allclose(got, torch.stack([probs[0, 4], probs[1, 0], torch.tensor(0.0), torch.tensor(0.0)]))
    assert scorer.score([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 histories for 1 candidate"):
        scorer.score([["i1"], ["i2"]], ["i3"])


@given(
    histories=st.lists(st.lists(st.sampled_from([*ITEMS[:5], "unknown"]), max_size=8), min_size=1, max_size=5),
    max_len=st.integers(1, 6),
)
@settings(max_examples=50, deadline=None)
def test_windows_are_left_padded_latest_known_items(histories, max_len):
    index = {item: i + 1 for i, item in enumerate(ITEMS)}
    seqs, unknown = encode_histories(histories, index, max_len)
    assert seqs.shape == (len(histories), max_len)
    assert unknown == sum(item == "unknown" for history in histories for item in history)
    for row, history in zip(seqs.tolist(), histories, strict=True):
        known = [index[item] for item in history if item != "unknown"][-max_len:]
        assert row == [0] * (max_len - len(known)) + known


def test_rank_metrics_by_hand():
    ranks = torch.tensor([0, 1, 9, 10])
    assert rank_metrics(ranks) == {"hr@10": 0.75, "ndcg@10": round((1 + 1 / 1.5849625 + 1 / 3.4594316) / 4, 4)}


def test_bad_input_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="align prepare --run_dir"):
        run(SASRecArgs(run_dir=str(tmp_path / "empty")))
    run_dir = make_catalog(tmp_path / "run")
    write_jsonl(run_dir.stage("catalog") / "train.jsonl", [{"user_id": "u7", "history": ["i1"], "target": "zz"}])
    with pytest.raises(ValueError, match=r"train.jsonl: user 'u7' has item 'zz', which is not in items.jsonl"):
        run(SASRecArgs(run_dir=str(run_dir.root), epochs=1, **FAST))
    assert not run_dir.stage("sasrec").exists()
    with pytest.raises(ValueError, match="must divide"):
        SASRecArgs(hidden=10, heads=3)
    with pytest.raises(FileNotFoundError, match="rerun `align baseline`"):
        load_sasrec(tmp_path)


def evaluate_with_a_stub_model(run_dir: RunDir, monkeypatch) -> tuple[list[dict], dict]:
    """`align eval` on cycle test rows, the LM replaced by a stub: (test rows, metrics.json) for baseline checks."""
    import align.eval as evaluation

    test_rows = [row | {"prompt": [], "target_item": row["target"]} for row in cycle_rows(40, 2)]
    if not run_dir.is_done("sid"):
        with run_dir.building("sid"):
            pass
    with run_dir.building("data") as out:
        write_jsonl(out / "test.jsonl", test_rows)
    fake = {"hr@1": 0.0, "hr@5": 0.0, "hr@10": 0.0, "ndcg@1": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0}
    monkeypatch.setattr(evaluation, "score_model", lambda checkpoint, rows, args: (fake, [], 1.0))
    evaluation.run(evaluation.EvalArgs(run_dir=str(run_dir.root), models="stub", num_beams=10))
    return test_rows, read_json(run_dir.root / "metrics.json")


def test_eval_reports_sasrec_beside_the_counting_baselines(tmp_path, monkeypatch):
    run_dir = make_catalog(tmp_path / "run")
    main(["--run_dir", str(run_dir.root), "--epochs", "2", "--hidden", "32", "--layers", "1", "--device", "cpu"])
    test_rows, result = evaluate_with_a_stub_model(run_dir, monkeypatch)
    ranked = load_sasrec(run_dir.stage("sasrec")).rank([row["history"] for row in test_rows], 10)
    expected = ranking_metrics(ranked, [row["target"] for row in test_rows], ks=(1, 5, 10))
    assert list(result["baselines"]) == ["popularity", "transitions", "sasrec"]
    assert result["baselines"]["sasrec"] == expected
