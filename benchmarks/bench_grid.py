"""Ours against vanilla TRL on every data shape: three length profiles and a toy model, defaults and equal settings.

Rows (each profile's trainers in one process, from the same saved model and data; steps interleaved):

- ``trl_default`` / ``ours_default``: each DPOConfig as it comes (gradient checkpointing on; TRL reloads
  its reference from disk, ours takes ``reference: auto`` → precomputed and ``packing: auto``);
- ``trl_equal`` / ``ours_equal``: the same settings on both: no gradient checkpointing, precomputed
  reference (TRL's ``precompute_ref_log_probs``, ours ``reference: precomputed``), ours ``packing: auto``.

Profiles (word-level tokens, so lengths are exact; log-normal lengths): ``short`` ~14-token prompts and
~10-token answers, 16 pairs per step; ``medium`` ~60/80, 8 pairs; ``long`` ~150/250, 8 pairs. Model: a
Qwen2 shape built from a config (``--preset``: ``cpu`` hidden 256, 4 layers, vocabulary 8192). The
``toy`` row: a tiny Llama (hidden 128, 2 layers, vocabulary 31), 16 short pairs, max_length 64, a
``ref_model`` given to both; ours in each ``packing``. Reported per row: the median step (forward,
loss, backward; no update), real tokens/s, the median of per-repetition ratios TRL/ours with the IQR,
the set-up time (the precomputing trainers' reference pass, ours' layout choice), the peak memory of
the trainer alone in a fresh process, and, per profile, the hardware-independent positions per real
token through the model body and the LM head (on a CPU TRL's fused head scores every position; on
CUDA with Triton only the scored tokens, the same for both).

    python benchmarks/bench_grid.py                      # CPU (hidden 256); the toy row too
    python benchmarks/bench_grid.py --reps 2 --steps 1   # a smoke run
    python benchmarks/bench_grid.py --preset qwen2.5-0.5b --profiles long short --no-toy   # GPU (bf16)
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch
import transformers
import trl
from bench_packing import PRESETS, preference_rows, saved_qwen2, word_tokenizer
from bench_trainer import device_name
from common import interleaved, isolated_peaks, prepare, report_alone, speedups
from datasets import Dataset

from dpo_plugin.forward.layout_cost import packed_cost, padded_cost
from dpo_plugin.forward.logps import ForwardSettings
from dpo_plugin.testing.tiny import tiny_model
from dpo_plugin.trl import DPOConfig, DPOTrainer

#: name: (pairs per step, prompt median, completion median, log-normal spread, max_length)
PROFILES = {
    "short": (16, 14, 10, 0.4, 256),
    "medium": (8, 60, 80, 0.4, 512),
    "long": (8, 150, 250, 0.6, 1024),
}
TRAINERS = ("trl_default", "ours_default", "trl_equal", "ours_equal")
TOY_TRAINERS = ("trl", "ours_none", "ours_padding_free", "ours_prefix_sharing", "ours_auto")
TOY_VOCAB = 31


def rows_of(profile: str, vocab: int, seed: int) -> list[dict[str, str]]:
    """Four steps' worth of pairs of ``profile`` (the precompute pass and ``auto``'s estimate read them all)."""
    pairs, prompt, completion, sigma, max_length = PROFILES[profile]
    return preference_rows(
        4 * pairs,
        vocab,
        seed,
        max_length,
        prompt_median=prompt,
        completion_median=completion,
        sigma=sigma,
        shortest=2,
    )


def config(name: str, profile: str, workdir: Path, device: torch.device) -> tuple[type, type, dict]:
    """The trainer and config classes and values of a grid row."""
    pairs, *_, max_length = PROFILES[profile]
    common = dict(
        output_dir=str(workdir / profile / name),
        bf16=device.type == "cuda",
        report_to="none",
        per_device_train_batch_size=pairs,
        max_length=max_length,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        num_train_epochs=1,
    )
    equal = {"gradient_checkpointing": False}
    cache = {"reference_params": {"cache_dir": str(workdir / "cache" / profile / name)}}
    if name == "trl_default":
        return trl.DPOTrainer, trl.DPOConfig, common
    if name == "trl_equal":
        return trl.DPOTrainer, trl.DPOConfig, {**common, **equal, "precompute_ref_log_probs": True}
    if name == "ours_default":
        return DPOTrainer, DPOConfig, {**common, **cache}
    return DPOTrainer, DPOConfig, {**common, **equal, **cache, "reference": "precomputed"}


def build(name: str, profile: str, model: str, tokenizer, dataset, workdir: Path, device: torch.device):
    """A grid row's trainer, its first batch and its set-up seconds."""
    trainer_class, config_class, values = config(name, profile, workdir, device)
    start = time.perf_counter()
    trainer = trainer_class(model, args=config_class(**values), train_dataset=dataset, processing_class=tokenizer)
    setup = time.perf_counter() - start
    pairs = PROFILES[profile][0]
    return trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(pairs)]), setup


def build_toy(name: str, policy, tokenizer, dataset, workdir: Path, device: torch.device):
    """A toy row's trainer (a copy of ``policy`` and of it as ``ref_model``), its first batch and set-up seconds."""
    common = dict(
        output_dir=str(workdir / "toy" / name),
        bf16=device.type == "cuda",
        report_to="none",
        per_device_train_batch_size=16,
        max_length=64,
        gradient_checkpointing=False,
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    trainer_class, args = (
        (trl.DPOTrainer, trl.DPOConfig(**common))
        if name == "trl"
        else (DPOTrainer, DPOConfig(**common, packing=name.removeprefix("ours_")))
    )
    start = time.perf_counter()
    trainer = trainer_class(
        copy.deepcopy(policy),
        ref_model=copy.deepcopy(policy),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    setup = time.perf_counter() - start
    return trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(16)]), setup


def positions(trainer, pairs: int) -> dict[str, float]:
    """Positions per real token through the body and the head (CPU head / Triton head), TRL's layout vs ours."""
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batches = [rows[i : i + pairs] for i in range(0, len(rows), pairs)]
    settings = ForwardSettings(max_length=trainer.args.max_length, truncation_mode=trainer.args.truncation_mode)
    figures = {}
    for name, cost in (
        ("trl", lambda b, compact: padded_cost(b, settings, compact)),
        ("ours", lambda b, compact: packed_cost(b, settings, compact, share_prompt=True, width=1)),
    ):
        cpu = [cost(b, False) for b in batches]
        gpu = [cost(b, True) for b in batches]
        real = sum(c.real for c in cpu)
        figures[f"{name}_body"] = sum(c.body for c in cpu) / real
        figures[f"{name}_head_cpu"] = sum(c.head for c in cpu) / real
        figures[f"{name}_head_triton"] = sum(c.head for c in gpu) / real
    return figures


def run_group(group: str, names, make, args, device: torch.device, flags: list[str]) -> dict:
    """Build the group's trainers (``make(name)`` → trainer, batch, set-up s), time them interleaved, measure each
    alone; the first name is the baseline."""
    trainers, batches, setup = {}, {}, {}
    for name in names:
        trainers[name], batches[name], setup[name] = make(name)
        prepare(trainers[name], batches[name], args.warmup, device)
    others = [n for n in ("trl_equal",) if n in names]
    result = interleaved(trainers, batches, args.reps, args.steps, device, baseline=names[0], others=others)
    real = int(next(b["attention_mask"].sum() for b in batches.values() if "attention_mask" in b))
    result.update(setup_s=setup, real_tokens_per_step=real)
    del trainers, batches
    result["peak_alone_mib"] = isolated_peaks(__file__, flags, [f"{group}/{n}" for n in names])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="cpu")
    parser.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES))
    parser.add_argument("--no-toy", action="store_true", help="leave out the toy model's row")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # GROUP/NAME alone in this process: print its peak
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dpo-bench-grid-"))
    shape = PRESETS[args.preset]
    flags = ["--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    flags += ["--seed", str(args.seed), "--workdir", str(workdir)]
    groups = {profile: _profile_maker(profile, shape, args.seed, workdir, device) for profile in args.profiles}
    if not args.no_toy:
        groups["toy"] = _toy_maker(args.seed, workdir, device)
    if args.only:
        group, name = args.only.split("/")
        trainer, batch, _ = groups[group][1](name)
        report_alone(trainer, batch, args.warmup, args.steps, device)
        return
    results = {}
    for group, (names, make, figures) in groups.items():
        results[group] = run_group(group, names, make, args, device, flags)
        results[group]["positions_per_real_token"] = figures()
        _print(group, results[group], names)
    meta = {
        "device": device_name(device),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "preset": args.preset,
        "shape": shape,
        "reps": args.reps,
        "steps_per_rep": args.steps,
    }
    print(f"device: {meta['device']}; versions {meta['versions']}; {args.reps} interleaved reps × {args.steps} steps")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "groups": results}, indent=2))


def _profile_maker(profile: str, shape: dict, seed: int, workdir: Path, device: torch.device):
    """(trainer names, ``make(name)``, ``figures()``) of a length profile on the preset's Qwen2 shape."""
    model_path, tokenizer = saved_qwen2(shape, workdir)
    dataset = Dataset.from_list(rows_of(profile, shape["vocab_size"], seed))

    def make(name: str):
        return build(name, profile, str(model_path), tokenizer, dataset, workdir, device)

    def figures() -> dict[str, float]:
        trainer, _, _ = build("ours_equal", profile, str(model_path), tokenizer, dataset, workdir, device)
        return positions(trainer, PROFILES[profile][0])

    return TRAINERS, make, figures


def _toy_maker(seed: int, workdir: Path, device: torch.device):
    """(trainer names, ``make(name)``, ``figures()``) of the toy model on 16 short pairs."""
    tokenizer = word_tokenizer(TOY_VOCAB)
    policy = tiny_model(TOY_VOCAB, hidden_size=128, num_layers=2)
    dataset = Dataset.from_list(
        preference_rows(64, TOY_VOCAB, seed, 64, prompt_median=14, completion_median=10, sigma=0.4, shortest=2)
    )

    def make(name: str):
        return build_toy(name, policy, tokenizer, dataset, workdir, device)

    def figures() -> dict[str, float]:
        return positions(make("ours_prefix_sharing")[0], 16)

    return TOY_TRAINERS, make, figures


def _print(group: str, result: dict, names) -> None:
    tokens = result["real_tokens_per_step"]
    print(f"\n== {group}: {tokens} real tokens per step")
    bases = list(result["ratios_to"])
    header = "".join(f"{'speed-up vs ' + base + ' (IQR)':>30s}" for base in bases)
    print(f"{'trainer':22s} {'step':>10s} {'tokens/s':>9s}{header} {'setup':>7s} {'peak alone':>11s}")
    for name in names:
        step = result["median_step_s"][name]
        peak = result["peak_alone_mib"][f"{group}/{name}"]
        print(
            f"{name:22s} {step * 1000:7.1f} ms {tokens / step:9.0f}{speedups(result, name, 17)} "
            f"{result['setup_s'][name]:6.1f}s "
            f"{peak:7.0f} MiB"
        )
    figures = result["positions_per_real_token"]
    print(
        "positions per real token — body: TRL {trl_body:.2f}, ours {ours_body:.2f}; LM head on a CPU: TRL "
        "{trl_head_cpu:.2f}, ours {ours_head_cpu:.2f}; LM head with Triton: TRL {trl_head_triton:.2f}, "
        "ours {ours_head_triton:.2f}".format(**figures)
    )


if __name__ == "__main__":
    main()
