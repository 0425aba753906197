"""The Axolotl host and TRL 1.14.1, tested in their own venv: Python 3.12 with axolotl==0.21.0 (which pins TRL 1.14.1),
this checkout installed beside it (scripts/axolotl_venv.sh builds the venv once, under the user's cache folder;
setup.sh runs it). Where no Python 3.12 exists these tests say so and are skipped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "axolotl_venv.sh"
#: run there: the Axolotl host end to end, and the parts of this suite that exercise TRL's internals
SUITES = [
    "integration/axolotl",
    "tests/test_trl_parity.py",
    "tests/test_trainer.py",
    "tests/test_packing.py",
    "tests/test_reference.py",
    "tests/test_session_without_trl.py",
    "tests/test_metrics_modules.py",
]


@pytest.fixture(scope="module")
def axolotl_python() -> Path:
    """The venv's interpreter, with this checkout installed in it (a few seconds when the venv exists)."""
    result = subprocess.run([str(SCRIPT), str(REPO)], capture_output=True, text=True)
    if result.returncode == 2:
        pytest.skip(f"Axolotl 0.21 needs Python 3.12: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().removeprefix("axolotl venv: ")) / "bin" / "python"


@pytest.mark.slow
@pytest.mark.parametrize("suite", SUITES)
def test_in_the_axolotl_venv(axolotl_python, suite):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DPO_PLUGIN_", "PYTEST_"))}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1"}
    result = subprocess.run(
        [str(axolotl_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", suite],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"{suite} in the Axolotl venv:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-2000:]
