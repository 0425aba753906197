"""Shared pieces of the benchmarks: synthetic preference rows, peak-memory probes, interleaved step timing."""

from __future__ import annotations

import gc
import statistics
import time
from pathlib import Path

import torch


def rows(n: int, length: int) -> list[dict[str, str]]:
    """Synthetic standard-format pairs whose completions have ``length`` words."""
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    out = []
    for i in range(n):
        text = " ".join(words[(i + j) % len(words)] for j in range(length))
        out.append({"prompt": f"Q{i}: {text[: length * 2]}?", "chosen": " " + text, "rejected": " " + text[::-1]})
    return out


def peak_reset(device: torch.device) -> None:
    """Reset the peak: CUDA's allocator peak, or the process's peak RSS (VmHWM)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def peak_mib(device: torch.device) -> float:
    """Peak since the last reset, MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_steps(trainer, batch, steps: int, device: torch.device) -> list[float]:
    """Seconds of each of ``steps`` training steps (forward, loss, backward; gradients dropped)."""
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.training_step(trainer.model, batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        trainer.model.zero_grad(set_to_none=True)
    return times


def prepare(trainer, batch, warmup: int, device: torch.device) -> None:
    """Get a trainer ready for bare training steps (optimizer created, never stepped) and warm it up."""
    trainer.model.train()
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1
    time_steps(trainer, batch, warmup, device)


def interleaved(trainers: dict, batches: dict, reps: int, steps: int, device: torch.device, baseline: str) -> dict:
    """Time ``steps`` training steps of each trainer in turn, ``reps`` times; medians, ratios to ``baseline``, peaks."""
    times = {name: [] for name in trainers}
    peaks = {name: [] for name in trainers}
    ratios = {name: [] for name in trainers}
    for _ in range(reps):
        rep = {}
        for name, trainer in trainers.items():
            gc.collect()
            peak_reset(device)
            measured = time_steps(trainer, batches[name], steps, device)
            peaks[name].append(peak_mib(device))
            times[name].extend(measured)
            rep[name] = statistics.median(measured)
        for name in trainers:
            ratios[name].append(rep[name] / rep[baseline])
    return {
        "median_step_s": {n: statistics.median(t) for n, t in times.items()},
        "ratio_median": {n: statistics.median(r) for n, r in ratios.items()},
        "ratio_iqr": {n: _iqr(r) for n, r in ratios.items()},
        "peak_mib": {n: max(p) for n, p in peaks.items()},
    }


def _iqr(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [values[0], values[0]]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]
