"""Shared pieces of the benchmarks: synthetic preference rows, interleaved step timing, per-trainer peak memory."""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
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


def interleaved(
    trainers: dict,
    batches: dict,
    reps: int,
    steps: int,
    device: torch.device,
    baseline: str,
    others: Sequence[str] = (),
) -> dict:
    """Time ``steps`` training steps of each trainer in turn, ``reps`` times; medians and ratios to ``baseline``.

    ``ratio_median``/``ratio_iqr``: the per-repetition step-time ratios to ``baseline``; ``ratios_to``
    the same to each of ``baseline`` and ``others``.
    """
    times = {name: [] for name in trainers}
    bases = [baseline, *others]
    ratios = {base: {name: [] for name in trainers} for base in bases}
    for _ in range(reps):
        rep = {}
        for name, trainer in trainers.items():
            gc.collect()
            measured = time_steps(trainer, batches[name], steps, device)
            times[name].extend(measured)
            rep[name] = statistics.median(measured)
        for base in bases:
            for name in trainers:
                ratios[base][name].append(rep[name] / rep[base])
    summary = {
        base: {"median": {n: statistics.median(r) for n, r in by.items()}, "iqr": {n: _iqr(r) for n, r in by.items()}}
        for base, by in ratios.items()
    }
    return {
        "median_step_s": {n: statistics.median(t) for n, t in times.items()},
        "ratio_median": summary[baseline]["median"],
        "ratio_iqr": summary[baseline]["iqr"],
        "ratios_to": summary,
    }


def _iqr(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [values[0], values[0]]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def report_alone(trainer, batch, warmup: int, steps: int, device: torch.device) -> None:
    """For a process holding this one trainer: warm up, time ``steps`` steps, print ``{"peak_mib": …}`` as JSON."""
    prepare(trainer, batch, warmup, device)
    gc.collect()
    peak_reset(device)
    time_steps(trainer, batch, steps, device)
    print(json.dumps({"peak_mib": peak_mib(device)}))


def isolated_peaks(script: str, argv: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """Each trainer alone in a fresh process (``script *argv --only NAME``): its peak memory during the steps, MiB."""
    peaks = {}
    for name in names:
        done = subprocess.run([sys.executable, script, *argv, "--only", name], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{script} --only {name} failed:\n{done.stderr[-3000:]}")
        peaks[name] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]
    return peaks


def speedups(result: dict, name: str, width: int) -> str:
    """``name``'s speed-up against each baseline of ``result["ratios_to"]`` with its IQR, as table cells."""
    cells = ""
    for ratios in result["ratios_to"].values():
        low, high = ratios["iqr"][name]
        cells += f"{1 / ratios['median'][name]:{width}.2f}× ({1 / high:.2f}–{1 / low:.2f})"
    return cells
