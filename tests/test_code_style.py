"""The gates the code passes: ruff (lint and format, 120 columns) on everything, mypy on the host-free core.

Configured in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``: the files mypy checks are listed there).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TREES = ["dpo_plugin", "tests", "integration", "benchmarks", "scripts", "docs"]


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("command", [("ruff", "check"), ("ruff", "format", "--check")], ids=["lint", "format"])
def test_ruff_passes(command):
    result = _run(*command, *TREES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_passes_on_the_host_free_core():
    result = _run("mypy", "--cache-dir", str(REPO / ".mypy_cache"))
    assert result.returncode == 0, result.stdout + result.stderr
