"""GPU benchmark: benchmarks/bench_packing.py for a Qwen2.5-0.5B-shaped model (built from a config), bf16.

    python integration/gpu/bench_packing.py [--reps 5] [--steps 3]

Vanilla TRL (defaults, precomputed reference, gradient checkpointing off) against dpo_plugin's padded
layout, prefix sharing with each attention kernel (SDPA in length buckets, flex_attention, varlen flash
attention; a kernel this card or torch cannot run is left out with the reason) and its defaults, 8 pairs
per step, max_length 1024, lengths drawn like a real preference set; real tokens/s, step time, ratios,
CUDA peak memory of each trainer alone, the card and the versions. About 5 minutes on one H100 (flex
compiles once per process, 30–60 s of it). Record the printed table in integration/gpu/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
TRAINERS = (
    "trl_default",
    "trl_precomputed",
    "trl_equal",
    "ours_none",
    "ours_prefix_sharing@sdpa",
    "ours_prefix_sharing@flex",
    "ours_prefix_sharing@varlen",
    "ours_default",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", default="bench_packing_gpu.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("This benchmark needs a CUDA GPU (benchmarks/bench_packing.py runs the CPU preset).")
    command = [sys.executable, "bench_packing.py", "--preset", "qwen2.5-0.5b", "--reps", str(args.reps)]
    command += ["--steps", str(args.steps), "--warmup", "2", "--pairs", "32", "--trainers", *TRAINERS]
    command += ["--json", str(Path(args.json).resolve())]
    raise SystemExit(subprocess.run(command, cwd=REPO / "benchmarks").returncode)


if __name__ == "__main__":
    main()
