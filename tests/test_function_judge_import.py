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


def test_a_target_that_cannot_judge_a_pair_is_refused_before_it_is_called(beside_the_config):
    """``os:system`` and a one-argument function: refused at construction, so never called."""
    (beside_the_config / "needs_a_package.py").write_text(
        "import pathlib\n\ndef judge(command):\n    pathlib.Path('called').touch()\n"
    )
    with pytest.raises(ConfigError) as info:
        FunctionJudge("needs_a_package:judge")
    assert str(info.value) == (
        "judge_params.function 'needs_a_package:judge' is a callable with the signature (command), not a judge "
        "function: it must take (prompt, a, b) and return 0, 1 or 0.5. It was not called."
    )
    with pytest.raises(ConfigError, match=r"'os:system' is a callable with the signature \(command\), not a judge"):
        FunctionJudge("os:system")
    assert not (beside_the_config / "called").exists()


def test_a_standard_module_name_is_never_taken_from_the_current_directory(beside_the_config):
    """winreg is a standard module (on Windows): a winreg.py beside the config is not imported in its place."""
    (beside_the_config / "winreg.py").write_text("import pathlib\npathlib.Path('ran').touch()\n\ndef judge(p, a, b):\n")
    with pytest.raises(ConfigError, match="cannot be imported: No module named 'winreg'"):
        import_callable("winreg:judge")
    assert not (beside_the_config / "ran").exists() and "winreg" not in sys.modules


def test_the_file_a_judge_is_imported_from_is_logged(caplog):
    import dpo_plugin.demo.arithmetic as arithmetic

    FunctionJudge("dpo_plugin.demo.arithmetic:judge_correct")
    assert f"imports dpo_plugin.demo.arithmetic from {arithmetic.__file__}: this runs its code" in caplog.text


def test_a_hung_judge_times_out_and_after_three_in_a_row_is_not_called_again(capsys):
    import threading
    import time

    release, calls = threading.Event(), []

    def judge(prompt, a, b):
        calls.append(prompt)
        if prompt != "quick":
            release.wait(30)  # hangs (until the test ends)
        return 0

    function_judge = FunctionJudge(judge, timeout=0.2)
    started = time.monotonic()
    try:
        verdicts = function_judge(["quick", "hangs 1", "hangs 2", "hangs 3", "hangs 4"], ["a"] * 5, ["b"] * 5)
    finally:
        release.set()
    elapsed = time.monotonic() - started
    assert verdicts == [0.0, None, None, None, None] and calls == ["quick", "hangs 1", "hangs 2", "hangs 3"]
    assert function_judge.errors == ["no verdict within 0.2 s (judge_params.timeout)"] * 3 + [
        "not called: the judge gave no verdict within 0.2 s 3 times in a row"
    ]
    assert 0.6 <= elapsed < 5  # three waits of 0.2 s, not the hung calls' 30 s
    assert "Judging (FunctionJudge)" in capsys.readouterr().err  # the progress bar
