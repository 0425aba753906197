"""A ``module:function`` judge is found in the current directory, as under ``python -m`` (issue 14).

The ``dpo-plugin`` console script puts its own folder on ``sys.path``, not the current directory,
while ``accelerate launch -m dpo_plugin`` puts the current directory first: the same YAML must find
``judge_capital.py`` beside it either way. Each test leaves ``sys.path`` and ``sys.modules`` as it found them.
"""

from __future__ import annotations

import os
import sys

import pytest

from dpo_plugin.errors import ConfigError
from dpo_plugin.evaluation.judges.function import FunctionJudge, import_callable

JUDGE = '''
def judge(prompt, a, b):
    """0 when a names the capital, 1 when b does."""
    return 0 if "Paris" in a else 1
'''


@pytest.fixture
def beside_the_config(tmp_path, monkeypatch):
    """``tmp_path`` as the current directory, and a ``sys.path`` as the console script has it: without it."""
    (tmp_path / "judge_capital.py").write_text(JUDGE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p or ".") != str(tmp_path)])
    yield tmp_path
    for name in ("judge_capital", "judge_elsewhere", "needs_a_package"):
        sys.modules.pop(name, None)


def test_a_module_in_the_current_directory_is_imported(beside_the_config, caplog):
    assert not any(os.path.abspath(p or ".") == str(beside_the_config) for p in sys.path)
    path_before = list(sys.path)
    judge = FunctionJudge("judge_capital:judge")
    assert judge(["Capital of France?"] * 2, ["Paris.", "Lyon."], ["Lyon.", "Paris."]) == [0.0, 1.0]
    assert sys.modules["judge_capital"].__file__ == str(beside_the_config / "judge_capital.py")
    assert sys.path == path_before  # the folder is not put on sys.path: no other import can come from it
    assert f"imports {beside_the_config / 'judge_capital.py'} from the current directory: this runs its code" in (
        caplog.text
    )


def test_a_module_nowhere_to_be_found_names_pythonpath(beside_the_config):
    with pytest.raises(ConfigError) as info:
        import_callable("judge_elsewhere:judge")
    assert str(info.value) == (
        "judge_params.function 'judge_elsewhere:judge' cannot be imported: No module named 'judge_elsewhere'. It is "
        f"neither installed nor in the current directory ({beside_the_config}): run from the module's folder, or put "
        "that folder on PYTHONPATH (PYTHONPATH=/path/to/folder dpo-plugin …)."
    )


def test_a_module_whose_own_import_fails_names_what_it_lacks(beside_the_config):
    (beside_the_config / "needs_a_package.py").write_text(
        "import no_such_dependency_xyz\n\ndef judge(p, a, b):\n    return 0\n"
    )
    with pytest.raises(ConfigError) as info:
        import_callable("needs_a_package:judge")
    assert str(info.value) == (
        "judge_params.function 'needs_a_package:judge' cannot be imported: No module named 'no_such_dependency_xyz'."
    )
    with pytest.raises(ConfigError, match="module 'judge_capital' has no attribute 'judje'"):
        import_callable("judge_capital:judje")


def test_the_console_script_finds_the_judge_beside_it(tmp_path):
    """The real ``dpo-plugin evaluate``: the judge is built before any model loads, so with a judge it can import
    the error is about the (missing) model; with one it cannot, about the judge and PYTHONPATH."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "judge_capital.py").write_text(JUDGE)
    script = str(Path(sys.executable).with_name("dpo-plugin"))
    env = {**os.environ, "PYTHONPATH": str(repo)}  # this checkout's code; the script's own folder is no help

    def evaluate(reference: str) -> str:
        command = [
            script,
            "evaluate",
            "--model",
            str(tmp_path / "no-model"),
            "--data",
            str(repo / "dpo_plugin/demo/data"),
        ]
        command += ["--checks", "win_rate", "--judge", "function", "--judge-params", f'{{"function": "{reference}"}}']
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stderr[-2000:]
        return result.stderr.splitlines()[-1]

    assert evaluate("judge_capital:judge").startswith(f"error: Cannot load the model '{tmp_path / 'no-model'}'")
    assert evaluate("judge_elsewhere:judge").endswith(
        "put that folder on PYTHONPATH (PYTHONPATH=/path/to/folder dpo-plugin …)."
    )
