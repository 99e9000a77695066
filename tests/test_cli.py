import subprocess
import sys

import pytest

from align.cli import COMMANDS, main


def test_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main([]) == 2


def test_unknown_command(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"align {command}" in out and "--run_dir" in out
    assert "align " + command in out.split("options:")[0]  # the description shows how to run it


def test_missing_stage_is_one_clear_line(tmp_path, capsys):
    assert main(["eval", "--run_dir", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("align eval: error:") and "align prepare --run_dir" in err
    assert "Traceback" not in err


def test_recipe_as_positional_argument(tmp_path, capsys):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"run_dir: {tmp_path / 'elsewhere'}\nnum_beams: 10\n")
    assert main(["eval", str(recipe)]) == 1
    assert "elsewhere" in capsys.readouterr().err


def test_console_script_help_is_fast_and_works():
    out = subprocess.run([sys.executable, "-m", "align.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "align <command>" in out.stdout
