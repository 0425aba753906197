"""Peak memory per step as max_length grows: TRL's padded rows against ours, with the same real tokens.

Each step holds 3 pairs: 2 ordinary ones (log-normal lengths, medians 100-token prompts and 150-token
answers, at most 500 tokens, so no max_length cuts them) and one whose rejected answer fills
``max_length`` (under prefix sharing, the branch over the prompt's keys and its own). So the real
tokens grow by about ``max_length`` per step while TRL's padded batch grows by ``6 × max_length``
positions (each of its 6 rows padded to the longest). For each max_length, each trainer runs alone
in a fresh process (``--only NAME --max-length L``): its peak during the steps (CPU: the process's
peak RSS, reset before the steps; CUDA: peak allocated); the growth from the shortest max_length is
what the layouts add. Trainers, all without gradient checkpointing and with a precomputed reference
(so only the layout differs): ``trl`` (TRL 1.16, ``precompute_ref_log_probs``), ``ours_none``
(``packing: none``), ``ours_prefix_sharing``, ``ours_padding_free``. Model: the Qwen2-shaped ``cpu``
preset of ``bench_packing.py`` (hidden 256, 4 layers, vocabulary 8192).

    python benchmarks/bench_memory.py                              # 512 1024 2048 4096
    python benchmarks/bench_memory.py --max-lengths 256 512 --steps 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
import trl
from bench_packing import PRESETS, preference_rows, saved_qwen2
from bench_trainer import device_name
from common import report_alone
from datasets import Dataset

from dpo_plugin.trl import DPOConfig, DPOTrainer

TRAINERS = ("trl", "ours_none", "ours_prefix_sharing", "ours_padding_free")
PAIRS = 3


def rows(max_length: int, vocab: int, seed: int) -> list[dict[str, str]]:
    """Two ordinary pairs (within 500 tokens, so no max_length cuts them) and one whose rejected answer fills
    ``max_length`` (under prefix sharing, the branch that attends to the prompt and itself); then the same
    again (two steps' worth)."""
    ordinary = preference_rows(PAIRS - 1, vocab, seed, 500, prompt_median=100, completion_median=150)
    rng = np.random.default_rng(seed + 1)
    words = [f"w{i}" for i in rng.integers(0, vocab - 2, max_length)]
    prompt = " ".join(words[:100])
    long = {
        "prompt": prompt,
        "chosen": ordinary[0]["chosen"],
        "rejected": " " + " ".join(words[100 : max_length - 1]),
    }
    return (ordinary + [long]) * 2


def build(name: str, max_length: int, workdir: Path, device: torch.device, seed: int):
    shape = PRESETS["cpu"]
    model_path, tokenizer = saved_qwen2(shape, workdir)
    values = dict(
        output_dir=str(workdir / f"{name}-{max_length}"),
        bf16=device.type == "cuda",
        report_to="none",
        per_device_train_batch_size=PAIRS,
        max_length=max_length,
        gradient_checkpointing=False,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        precompute_ref_log_probs=True,
    )
    config_class, trainer_class = (trl.DPOConfig, trl.DPOTrainer) if name == "trl" else (DPOConfig, DPOTrainer)
    if name != "trl":
        values |= {"packing": name.removeprefix("ours_"), "reference_params": {"cache_dir": str(workdir / "cache")}}
    dataset = Dataset.from_list(rows(max_length, shape["vocab_size"], seed))
    trainer = trainer_class(
        str(model_path), args=config_class(**values), train_dataset=dataset, processing_class=tokenizer
    )
    return trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(PAIRS)])


def measure(name: str, max_length: int, args: argparse.Namespace, workdir: Path) -> dict:
    """One trainer at one max_length, alone in a fresh process: its peak and its batch's positions."""
    command = [sys.executable, __file__, "--only", name, "--max-length", str(max_length), "--workdir", str(workdir)]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{name} at max_length {max_length} failed:\n{done.stderr[-3000:]}")
    found: dict = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            found |= json.loads(line)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-lengths", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    parser.add_argument("--trainers", nargs="+", choices=TRAINERS, default=list(TRAINERS))
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--max-length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dpo-bench-memory-"))
    if args.only:
        trainer, batch = build(args.only, args.max_length, workdir, device, args.seed)
        positions = int(batch["input_ids"].numel())
        real = int(batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_tokens"].sum())
        print(json.dumps({"positions": positions, "real_tokens": real}))
        report_alone(trainer, batch, args.warmup, args.steps, device)
        return
    table = {
        length: {name: measure(name, length, args, workdir) for name in args.trainers} for length in args.max_lengths
    }
    _print(table, args, device)
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in table.items()}, indent=2))


def _print(table: dict, args: argparse.Namespace, device: torch.device) -> None:
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}
    print(f"device: {device_name(device)}; versions {versions}; {PAIRS} pairs per step")
    header = "".join(f"{name + ' peak (positions)':>38s}" for name in args.trainers)
    print(f"{'max_length':>10s} {'real tokens':>11s}{header}")
    for length, row in table.items():
        real = next(iter(row.values()))["real_tokens"]
        cells = "".join(f"{r['peak_mib']:23.0f} MiB ({r['positions']:6d})" for r in row.values())
        print(f"{length:10d} {real:11d}{cells}")
    first, last = table[min(table)], table[max(table)]
    real = last[args.trainers[0]]["real_tokens"] - first[args.trainers[0]]["real_tokens"]
    growth = ", ".join(
        f"{name} +{last[name]['peak_mib'] - first[name]['peak_mib']:.0f} MiB "
        f"({(last[name]['peak_mib'] - first[name]['peak_mib']) / real * 1000:.1f} MiB per 1000 real tokens)"
        for name in args.trainers
    )
    print(f"growth {min(table)} → {max(table)} (+{real} real tokens per step): {growth}")


if __name__ == "__main__":
    main()
