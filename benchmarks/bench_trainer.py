"""Step time and peak memory: vanilla TRL's DPOTrainer vs dpo_plugin's, same model, data and settings.

Both trainers are built in one process from the same saved model, ours with ``packing: none`` so that
both run TRL's padded computation (``bench_packing.py`` measures the packed layouts); their training steps
(forward, loss, backward; the weights are not updated, so every repetition does the same work)
are timed interleaved, A B A B …, after a warm-up. Reported: the median step time of each, the
median of the per-repetition ratios ours/TRL with its interquartile range, and the peak memory of
each trainer ALONE: it runs again in a fresh process of its own (``--only NAME``), whose peak
during the steps is measured (CUDA: peak allocated; CPU: the process's peak RSS, reset before
the steps via /proc/self/clear_refs, so model, optimizer state and activations).

    python benchmarks/bench_trainer.py                       # tiny Llama, CPU or the GPU if present
    python benchmarks/bench_trainer.py --model PATH --loss sigmoid --reps 9
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch
import transformers
import trl
from common import interleaved, isolated_peaks, prepare, report_alone, rows
from datasets import Dataset

from dpo_plugin.testing.tiny import tiny_model, tiny_tokenizer
from dpo_plugin.trl import DPOConfig, DPOTrainer


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def saved_model(args: argparse.Namespace, workdir: Path) -> tuple[str, object]:
    """A model folder (the given one, or a tiny Llama saved there) and its tokenizer."""
    if args.model:
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        return args.model, tokenizer
    tokenizer = tiny_tokenizer()
    path = workdir / "model"
    tiny_model(len(tokenizer), hidden_size=args.hidden_size, num_layers=args.layers).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path), tokenizer


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved causal LM (default: a tiny Llama built from a config)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--length", type=int, default=48, help="words per completion")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one trainer alone in this process: print its peak
    return parser


def forwarded(args: argparse.Namespace, model_path: str) -> list[str]:
    """The flags that rebuild the same trainers in a fresh process (for the per-trainer memory)."""
    flags = ["--model", model_path, "--batch-size", str(args.batch_size), "--length", str(args.length)]
    return flags + ["--steps", str(args.steps), "--warmup", str(args.warmup)]


def common_config(args: argparse.Namespace, workdir: Path, device: torch.device) -> dict:
    return dict(
        output_dir=str(workdir / "out"),
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(),
        report_to="none",
        per_device_train_batch_size=args.batch_size,
        gradient_checkpointing=False,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )


TRAINERS = {"trl": (trl.DPOTrainer, trl.DPOConfig), "dpo_plugin": (DPOTrainer, DPOConfig)}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--loss", nargs="+", default=["sigmoid"])
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workdir = Path(tempfile.mkdtemp(prefix="dpo-bench-"))
    model_path, tokenizer = saved_model(args, workdir)
    dataset = Dataset.from_list(rows(4 * args.batch_size, args.length))
    settings = {**common_config(args, workdir, device), "loss_type": args.loss}
    names = [args.only] if args.only else list(TRAINERS)
    trainers = {}
    for name in names:
        trainer_class, config_class = TRAINERS[name]
        # equal settings: a reference model held (TRL loads one by default), padded batches
        own = {"packing": "none", "reference": "copy"} if config_class is DPOConfig else {}
        trainers[name] = trainer_class(
            model_path, args=config_class(**settings, **own), train_dataset=dataset, processing_class=tokenizer
        )
    first = next(iter(trainers.values()))
    batch = first.data_collator([first.train_dataset[i] for i in range(args.batch_size)])
    if args.only:
        report_alone(first, batch, args.warmup, args.steps, device)
        return
    for trainer in trainers.values():
        prepare(trainer, batch, args.warmup, device)
    result = interleaved(trainers, {n: batch for n in trainers}, args.reps, args.steps, device, baseline="trl")
    del trainers, first
    result["peak_alone_mib"] = isolated_peaks(
        __file__, forwarded(args, model_path) + ["--loss", *args.loss], list(TRAINERS)
    )
    result.update(
        device=device_name(device),
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        model=args.model or f"tiny Llama (hidden {args.hidden_size}, {args.layers} layers)",
        loss=args.loss,
        batch_size=args.batch_size,
        reps=args.reps,
        steps_per_rep=args.steps,
    )
    print(f"device: {result['device']}; model: {result['model']}; loss: {args.loss}; batch {args.batch_size}")
    for name in TRAINERS:
        print(
            f"  {name:10s} median step {result['median_step_s'][name] * 1000:8.2f} ms   "
            f"peak alone {result['peak_alone_mib'][name]:9.1f} MiB"
        )
    low, high = result["ratio_iqr"]["dpo_plugin"]
    print(
        f"  ratio dpo_plugin/trl: median {result['ratio_median']['dpo_plugin']:.3f} (IQR {low:.3f}–{high:.3f}) "
        f"over {args.reps} interleaved repetitions"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
