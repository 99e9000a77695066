"""benchmarks/rl_demo.py at toy size: one seed through every stage, both models scored on the same users."""

import sys
from pathlib import Path

import pytest
import torch
from tiny_run import make_base_model

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import rl_demo  # noqa: E402

pytestmark = pytest.mark.slow


def test_one_seed_reports_sft_and_rl_on_the_same_users(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = make_base_model(tmp_path / "base")
    toy = ["prepare.demo_items=40", "prepare.demo_users=60", "data.max_sft_examples=32",
           f"sft.model_name_or_path={base}", "sft.max_steps=2", "baseline.epochs=2", "rl.max_steps=1",
           "rl.num_generations=4", "rl.per_device_train_batch_size=4", "eval.batch_size=8"]
    try:
        rows = rl_demo.main(["--seeds", "7", "--out", str(tmp_path / "study"), "--eval-users", "10",
                             *[part for item in toy for part in ("--set", item)]])
    finally:
        torch.set_num_threads(threads)
    (row,) = rows
    assert row["seed"] == 7 and row["n_users"] == 10 and row["sasrec"] is not None
    assert row["ndcg@10_change"] == round(row["rl"]["ndcg@10"] - row["sft"]["ndcg@10"], 4)
    assert row["rl_config"][1]["seed"] == 7  # the seed reaches the stages (trl.GRPOConfig's)
    out = capsys.readouterr().out
    assert "| 7 | 10 |" in out and "of 1 seeds" in out


def test_list_overrides_become_one_argument_per_value():
    items = ["rl.reward_weights=1 0.5", "rl.rewards=cf,hit", "eval.models="]
    args = rl_demo.parse_args([part for item in items for part in ("--set", item)])
    assert args.extra == {"rl": ["--reward_weights", "1", "0.5", "--rewards", "cf,hit"], "eval": ["--models", ""]}


def test_bad_overrides_are_named(capsys):
    with pytest.raises(SystemExit):
        rl_demo.parse_args(["--set", "train.lr=1"])
    assert "COMMAND.KEY=VALUE" in capsys.readouterr().err
