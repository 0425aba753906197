"""Step time of an Axolotl DPO run with the plugin on and off (run with the Axolotl venv's python, on an idle machine).

    $(scripts/axolotl_venv.sh | sed 's/axolotl venv: //')/bin/python benchmarks/bench_axolotl.py [--repetitions 3]

One saved Qwen2-shaped model (hidden 256, 4 layers; the byte-level tokenizer of dpo_plugin.testing) and 64
synthetic pairs (completions of ~40 words, ~250 tokens); `python -m axolotl.cli.train` for 16 steps of 4 pairs,
three configurations, interleaved:

- ``off``: Axolotl alone (its DPO: the reference loaded a second time, padded rows);
- ``on, equal``: the plugin at Axolotl's settings (``reference: copy``, ``packing: none``): the plugin's overhead;
- ``on, default``: the plugin's defaults (``reference: auto``, ``packing: auto``).

Step time is the trainer's ``train_runtime`` / steps (the precomputed reference pass of ``auto`` happens before
training and is reported apart, as the whole command's wall time). Medians and spread over repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
LOG_HISTORY = HERE.parent / "integration" / "axolotl"
PLUGIN = "dpo_plugin.hosts.axolotl.DPOPlugin"
RUNS = {
    "off": {},
    "on, equal": {"reference": "copy", "packing": "none"},
    "on, default": {},
}


def save_model(folder: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dpo_plugin.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def write_pairs(path: Path, n: int = 64, words: int = 40) -> None:
    sys.path.insert(0, str(HERE))
    from common import rows

    path.write_text("".join(json.dumps(row) + "\n" for row in rows(n, words)))


def run(root: Path, name: str, repetition: int) -> dict[str, float]:
    plugin = name != "off"
    values = {
        "base_model": str(root / "model"),
        "rl": "dpo",
        "rl_beta": 0.1,
        "plugins": ([PLUGIN] if plugin else []) + ["log_history_plugin.LogHistoryPlugin"],
        "datasets": [{"path": str(root / "pairs.jsonl"), "split": "train", "type": "passthrough"}],
        "dataset_prepared_path": str(root / "prepared"),
        "val_set_size": 0,
        "output_dir": str(root / f"run-{name.replace(', ', '-')}-{repetition}"),
        "sequence_len": 1024,
        "micro_batch_size": 4,
        "num_epochs": 1,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "learning_rate": 1e-4,
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": repetition,
        **RUNS[name],
    }
    config = root / f"{Path(values['output_dir']).name}.yml"
    config.write_text(yaml.safe_dump(values))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LOG_HISTORY), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "axolotl.cli.train", str(config)], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    history = json.loads((Path(values["output_dir"]) / "log_history.json").read_text())
    summary = next(e for e in history if "train_runtime" in e)
    steps = sum(1 for e in history if "loss" in e)
    return {"step": summary["train_runtime"] / steps, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-axolotl-"))
    save_model(root / "model")
    write_pairs(root / "pairs.jsonl")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in RUNS}
    for repetition in range(args.repetitions):
        for name in RUNS:  # interleaved
            results[name].append(run(root, name, repetition))
            print(f"rep {repetition} {name}: {results[name][-1]}", flush=True)
    off = statistics.median(r["step"] for r in results["off"])
    print(f"\n{'run':<12} {'step s (median)':>16} {'range':>18} {'ratio to off':>13} {'wall s (median)':>16}")
    for name, values in results.items():
        steps = [r["step"] for r in values]
        median = statistics.median(steps)
        walls = statistics.median(r["wall"] for r in values)
        spread = f"{min(steps):.3f}–{max(steps):.3f}"
        print(f"{name:<12} {median:>16.3f} {spread:>18} {median / off:>13.3f} {walls:>16.1f}")


if __name__ == "__main__":
    main()
