"""Step time and peak memory: vanilla TRL's DPOTrainer vs dpo_plugin's, same model, data and settings.

Both trainers are built in one process from the same saved model; their training steps
(forward, loss, backward; the weights are not updated, so every repetition does the same work)
are timed interleaved, A B A B …, after a warm-up. Reported: the median step time of each, the
median of the per-repetition ratios ours/TRL with its interquartile range, and the peak memory
during each trainer's steps (CUDA: peak allocated; CPU: the process's peak RSS, reset before
each block via /proc/self/clear_refs, so it includes everything resident).

    python benchmarks/bench_trainer.py                       # tiny Llama, CPU or the GPU if present
    python benchmarks/bench_trainer.py --model PATH --loss sigmoid --reps 9
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
import trl
from datasets import Dataset

from dpo_plugin.tiny import tiny_model, tiny_tokenizer
from dpo_plugin.trl import DPOConfig, DPOTrainer


def _rows(n: int, length: int) -> list[dict[str, str]]:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    rows = []
    for i in range(n):
        text = " ".join(words[(i + j) % len(words)] for j in range(length))
        rows.append({"prompt": f"Q{i}: {text[: length * 2]}?", "chosen": " " + text, "rejected": " " + text[::-1]})
    return rows


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _time_steps(trainer, batch, steps: int, device: torch.device) -> list[float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved causal LM (default: a tiny Llama built from a config)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--loss", nargs="+", default=["sigmoid"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--length", type=int, default=48, help="words per completion")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workdir = Path(tempfile.mkdtemp(prefix="dpo-bench-"))
    if args.model:
        model_path = args.model
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_path)
    else:
        tokenizer = tiny_tokenizer()
        model = tiny_model(len(tokenizer), hidden_size=args.hidden_size, num_layers=args.layers)
        model_path = str(workdir / "model")
        model.save_pretrained(model_path)
        tokenizer.save_pretrained(model_path)
        del model
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = Dataset.from_list(_rows(4 * args.batch_size, args.length))
    common = dict(
        output_dir=str(workdir / "out"),
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
        report_to="none",
        per_device_train_batch_size=args.batch_size,
        gradient_checkpointing=False,
        loss_type=args.loss,
        max_length=4 * args.length + 64,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    trainers = {
        "trl": trl.DPOTrainer(model_path, args=trl.DPOConfig(**common), train_dataset=dataset, processing_class=tokenizer),
        "dpo_plugin": DPOTrainer(model_path, args=DPOConfig(**common), train_dataset=dataset, processing_class=tokenizer),
    }
    batch = trainers["trl"].data_collator([trainers["trl"].train_dataset[i] for i in range(args.batch_size)])
    for trainer in trainers.values():
        trainer.model.train()
        trainer.create_optimizer()  # training_step expects the optimizer to exist (it is never stepped here)
        trainer.current_gradient_accumulation_steps = 1
        _time_steps(trainer, batch, args.warmup, device)

    times = {name: [] for name in trainers}
    peaks = {name: [] for name in trainers}
    ratios = []
    for _ in range(args.reps):
        rep = {}
        for name, trainer in trainers.items():
            gc.collect()
            _peak_reset(device)
            steps = _time_steps(trainer, batch, args.steps, device)
            peaks[name].append(_peak_mib(device))
            times[name].extend(steps)
            rep[name] = statistics.median(steps)
        ratios.append(rep["dpo_plugin"] / rep["trl"])

    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "model": args.model or f"tiny Llama (hidden {args.hidden_size}, {args.layers} layers)",
        "loss": args.loss,
        "batch_size": args.batch_size,
        "median_step_s": {name: statistics.median(t) for name, t in times.items()},
        "ratio_median": statistics.median(ratios),
        "ratio_iqr": [quartiles[0], quartiles[2]],
        "peak_mib": {name: max(p) for name, p in peaks.items()},
        "reps": args.reps,
        "steps_per_rep": args.steps,
    }
    print(f"device: {result['device']}; model: {result['model']}; loss: {args.loss}; batch {args.batch_size}")
    for name in trainers:
        print(f"  {name:10s} median step {result['median_step_s'][name] * 1000:8.2f} ms   peak {result['peak_mib'][name]:9.1f} MiB")
    print(
        f"  ratio dpo_plugin/trl: median {result['ratio_median']:.3f} "
        f"(IQR {result['ratio_iqr'][0]:.3f}–{result['ratio_iqr'][1]:.3f}) over {args.reps} interleaved repetitions"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
