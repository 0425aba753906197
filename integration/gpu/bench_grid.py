"""GPU benchmark: benchmarks/bench_grid.py for a Qwen2.5-0.5B-shaped model (built from a config), bf16.

    python integration/gpu/bench_grid.py [--reps 5] [--steps 3]

TRL's defaults against ours, and at equal settings (no gradient checkpointing, precomputed reference),
on the short (16 pairs of ~14-token prompts and ~10-token answers) and long (8 pairs, ~150/250 tokens,
log-normal) profiles: step time, real tokens/s, ratios with their IQR, CUDA peak allocated memory of
each trainer alone, positions per real token, the card and the versions. Targets: at least 2.5× TRL
default's real tokens/s at no more than its peak memory on the long profile, never slower on the short
one. About 6 minutes on one H100. Record the printed tables in integration/gpu/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", default="bench_grid_gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("This benchmark needs a CUDA GPU (benchmarks/bench_grid.py runs the CPU grid).")
    command = [sys.executable, "bench_grid.py", "--preset", "qwen2.5-0.5b", "--profiles", "short", "long"]
    command += ["--no-toy", "--reps", str(args.reps), "--steps", str(args.steps)]
    command += ["--json", str(Path(args.json).resolve())]
    raise SystemExit(subprocess.run(command, cwd=REPO / "benchmarks").returncode)


if __name__ == "__main__":
    main()
