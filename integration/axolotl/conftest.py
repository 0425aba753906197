"""These tests run in a Python 3.12 venv with axolotl==0.21.0 (scripts/axolotl_venv.sh builds it; the main suite's
tests/test_axolotl_venv.py runs them there). Elsewhere they are not collected."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("axolotl") else ["test_*.py"]
