"""benchmarks/quality.py at CPU scale: every row through the real stages, on generated LC-Rec data and, when present,
on a 50-user subset of ../shared/data/industrial."""

import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from tiny_run import make_base_model

from align.data.synthetic import make_demo_data
from align.run_dir import read_json

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402

pytestmark = pytest.mark.slow
INDUSTRIAL = ROOT.parent / "shared" / "data" / "industrial"
# Toy budgets for every stage (the recipes' own sizes are for real runs)
TOY = [
    "--set", "sasrec.epochs=2", "--set", "scratch.epochs=2", "--set", "scratch.hidden=32", "--set", "scratch.heads=2",
    "--set", "scratch.layers=1", "--set", "scratch.max_valid_users=10", "--set", "sft.per_device_train_batch_size=4",
    "--set", "rl.num_generations=4", "--set", "rl.per_device_train_batch_size=4", "--set", "eval.batch_size=8",
    "--set", "eval.num_beams=10", "--sft-steps", "2", "--rl-steps", "1", "--device", "cpu",
]


def write_lcrec(folder: Path, n_items: int = 40, n_users: int = 50) -> Path:
    """The demo generator's catalog and users as an LC-Rec folder (items.json, sequences.inter.json)."""
    items, interactions = make_demo_data(n_items, n_users, seed=3)
    folder.mkdir(parents=True)
    catalog = {item.item_id: {"title": item.title, "description": item.description, "brand": item.brand,
                              "categories": item.categories} for item in items}
    sequences: dict[str, list[str]] = defaultdict(list)
    for user, item, _ in interactions:
        sequences[user].append(item)
    (folder / "items.json").write_text(json.dumps(catalog))
    (folder / "sequences.inter.json").write_text(json.dumps(sequences))
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_row_on_generated_data_and_resume(tmp_path, capsys):
    data, base = write_lcrec(tmp_path / "data"), make_base_model(tmp_path / "base")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Earlier section\n\ntext\n")
    argv = [str(data), "--run-dir", str(tmp_path / "run"), "--model", str(base), "--results", str(results),
            "--label", "toy", "--eval-users", "12", *TOY]
    metrics = quality.main(argv)

    assert set(metrics["models"]) == {"sft", "rl"}
    assert set(metrics["baselines"]) == {"popularity", "transitions", "sasrec", "sid-scratch"}
    assert metrics["n_users"] == 12
    record = read_json(tmp_path / "run" / "bench.json")
    assert list(record["stages"]) == ["prepare", "sids", "data", "sasrec", "scratch", "sft", "rl", "eval"]
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n## Earlier section\n\ntext\n\n" + quality.LOG_HEADING)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "| toy |" in line]
    assert [row.split(" | ")[2] for row in rows] == ["popularity", "transitions", "sasrec", "sid-scratch", "sft", "rl"]
    hr10 = f"{metrics['models']['rl']['hr@10']:.4f}"
    assert rows[-1].split(" | ")[5] == hr10 and "python benchmarks/quality.py" in rows[-1]

    # Resume: the same command reuses every stage but the evaluation; another task list rebuilds data, sft, rl.
    capsys.readouterr()
    quality.main(argv)
    out = capsys.readouterr().out
    assert all(f"[quality] {stage}: reusing" in out for stage in ("prepare", "sids", "data", "sasrec", "scratch",
                                                                  "sft", "rl"))
    quality.main([*argv, "--tasks", "seqrec", "--rows", "transitions,sft"])
    out = capsys.readouterr().out
    assert "[quality] sids: reusing" in out and "[quality] data: align data" in out
    assert "[quality] sft: align sft" in out and "rl" not in read_json(tmp_path / "run" / "bench.json")["stages"]
    assert len([line for line in results.read_text().splitlines() if "| toy |" in line]) == 6 + 6 + 2


def test_bad_options_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        quality.parse_args([str(tmp_path / "missing")])
    assert "does not exist" in capsys.readouterr().err
    data = write_lcrec(tmp_path / "data", n_items=10, n_users=5)
    for bad, message in ((["--rows", "bert4rec"], "unknown 'bert4rec'"), (["--set", "sft=1"], "STAGE.KEY=VALUE"),
                         (["--sids", "minionerec"], "minionerec_sids.json")):
        with pytest.raises(SystemExit):
            quality.parse_args([str(data), *bad])
        assert message in capsys.readouterr().err


def industrial_subset(folder: Path, n_users: int = 50) -> Path:
    """The first n_users users of ../shared/data/industrial with the items they touched, in the same formats."""
    sequences = json.loads((INDUSTRIAL / "sequences.inter.json").read_text())
    users = dict(list(sequences.items())[:n_users])
    touched = {str(item) for items in users.values() for item in items}
    folder.mkdir(parents=True)
    for name, rows in (("sequences.inter.json", users), ("items.json", None), ("minionerec_sids.json", None)):
        rows = rows or {k: v for k, v in json.loads((INDUSTRIAL / name).read_text()).items() if k in touched}
        (folder / name).write_text(json.dumps(rows))
    return folder


@pytest.mark.skipif(not INDUSTRIAL.is_dir(), reason="../shared/data/industrial is not here")
def test_fifty_industrial_users_with_minionerec_sids(tmp_path):
    data, base = industrial_subset(tmp_path / "data"), make_base_model(tmp_path / "base")
    metrics = quality.main([str(data), "--run-dir", str(tmp_path / "run"), "--model", str(base),
                            "--results", "", "--sids", "minionerec", "--rows", "popularity,transitions,scratch,sft",
                            *TOY])
    assert metrics["n_users"] == 50
    assert set(metrics["baselines"]) == {"popularity", "transitions", "sid-scratch"}
    assert set(metrics["models"]) == {"sft"}
    sid_map = read_json(tmp_path / "run" / "sid" / "sid_map.json")
    shipped = json.loads((data / "minionerec_sids.json").read_text())
    assert set(sid_map["items"]) == set(shipped)
    for item, codes in sid_map["items"].items():  # MiniOneRec's codes, plus a level only if some of them collide
        assert [f"<{chr(97 + level)}_{code}>" for level, code in enumerate(codes[:3])] == shipped[item]
