"""Step time, peak memory and reference memory of the reference strategies copy, adapter and precomputed.

One process, the same LoRA-wrapped model and data for the three; training steps timed interleaved,
and each strategy's peak memory measured alone in a fresh process (see bench_trainer.py for the
method). ``copy`` holds a frozen copy of the base model, ``adapter``
runs the policy with its adapters disabled (a second forward, no copy), ``precomputed`` reads the
reference log-probs computed once before training (no reference forward, nothing held).

    python benchmarks/bench_reference.py [--model PATH] [--reps 7]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
import transformers
import trl
from bench_trainer import arguments, common_config, device_name, forwarded, saved_model
from common import interleaved, isolated_peaks, prepare, report_alone, rows
from datasets import Dataset

from dpo_plugin.trl import DPOConfig, DPOTrainer

STRATEGIES = ("copy", "adapter", "precomputed")


def main() -> None:
    args = arguments(__doc__).parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workdir = Path(tempfile.mkdtemp(prefix="dpo-bench-"))
    model_path, tokenizer = saved_model(args, workdir)
    dataset = Dataset.from_list(rows(4 * args.batch_size, args.length))
    trainers, batches = {}, {}
    for name in [args.only] if args.only else STRATEGIES:
        config = DPOConfig(
            **common_config(args, workdir, device),
            adapter="lora",
            adapter_params={"r": 16},
            packing="none",
            reference=name,
            reference_params={"cache_dir": str(workdir / "cache")} if name == "precomputed" else None,
        )
        trainer = DPOTrainer(model_path, args=config, train_dataset=dataset, processing_class=tokenizer)
        trainers[name] = trainer
        batches[name] = trainer.data_collator([trainer.train_dataset[i] for i in range(args.batch_size)])
        if args.only:
            report_alone(trainer, batches[name], args.warmup, args.steps, device)
            return
        prepare(trainer, batches[name], args.warmup, device)
    result = interleaved(trainers, batches, args.reps, args.steps, device, baseline="copy")
    reference_mib = {n: t.session.reference_strategy.memory_bytes() / 2**20 for n, t in trainers.items()}
    del trainers, trainer
    result["peak_alone_mib"] = isolated_peaks(__file__, forwarded(args, model_path), STRATEGIES)
    result.update(
        device=device_name(device),
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        model=args.model or f"tiny Llama (hidden {args.hidden_size}, {args.layers} layers)",
        reference_mib=reference_mib,
        reps=args.reps,
        steps_per_rep=args.steps,
    )
    print(f"device: {result['device']}; model: {result['model']}; LoRA r=16; batch {args.batch_size}")
    for name in STRATEGIES:
        low, high = result["ratio_iqr"][name]
        print(
            f"  {name:12s} median step {result['median_step_s'][name] * 1000:8.2f} ms  "
            f"(×{result['ratio_median'][name]:.3f} of copy, IQR {low:.3f}–{high:.3f})  "
            f"peak alone {result['peak_alone_mib'][name]:8.1f} MiB  "
            f"reference held {result['reference_mib'][name]:7.1f} MiB"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
