"""Where a training step's time goes: cProfile of the toy model's steps (bench_grid.py's toy row) in one layout.

    python benchmarks/profile_step.py ours_prefix_sharing [--steps 30] [--sort tottime] [--top 30]
    python benchmarks/profile_step.py trl

Prints the step time and the profile's top functions (by own time, or ``--sort cumulative``), and
how many attention calls and package-metadata reads a step makes (accelerate's ``unwrap_model`` and
``is_peft_model`` read them on every call: what the forward must not do per step).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import torch
from bench_grid import TOY_TRAINERS, _toy_maker
from common import prepare, time_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trainer", choices=TOY_TRAINERS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumulative"])
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    device = torch.device("cpu")
    _, make, _ = _toy_maker(0, Path(tempfile.mkdtemp(prefix="dpo-profile-")), device)
    trainer, batch, _ = make(args.trainer)
    prepare(trainer, batch, 3, device)
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    time_steps(trainer, batch, args.steps, device)
    profile.disable()
    seconds = (time.perf_counter() - start) / args.steps
    stats = pstats.Stats(profile)
    calls = {name: count for (_, _, name), (count, *_rest) in stats.stats.items()}  # type: ignore[attr-defined]
    sdpa = calls.get("<built-in method torch._C._nn.scaled_dot_product_attention>", 0)
    metadata = sum(count for name, count in calls.items() if name == "metadata")
    print(
        f"{args.trainer}: {seconds * 1000:.1f} ms per step (profiled), {sdpa / args.steps:.0f} attention calls and "
        f"{metadata / args.steps:.0f} package-metadata reads per step"
    )
    stats.sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
