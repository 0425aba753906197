"""Real tokens per second: vanilla TRL vs dpo_plugin's batch layouts, same Qwen2-shaped model and data, one process.

Trainers (all from the same saved model, the same 8 pairs per step):

- ``trl_default``: TRL 1.16's DPOConfig as it comes (gradient checkpointing on, reference reloaded from disk);
- ``trl_precomputed``: the same with ``precompute_ref_log_probs: true``;
- ``trl_equal``: TRL with gradient checkpointing off, the settings ours run with below;
- ``ours_none`` / ``ours_padding_free`` / ``ours_prefix_sharing``: ``packing`` set, gradient
  checkpointing off, ``reference: copy`` (a frozen in-memory copy, what TRL's reload gives);
- ``ours_default``: our DPOConfig as it comes (``packing: auto``, ``reference: auto`` → precomputed
  for a run over the whole data, gradient checkpointing on as TRL).

Lengths are drawn like a real preference set: log-normal (σ = 0.6), medians 150-token prompts and
250-token completions, each sequence capped at max_length 1024. Each trainer's training step
(forward, loss, backward; no update) is timed on its own collated batch of the same pairs,
interleaved, after a warm-up; reported: the median step, real tokens/s (the tokens TRL's padded
batch holds without padding, per second), the median of per-repetition ratios to ``trl_default``
and to ``trl_equal`` (IQR), the one-off setup time (a precompute pass for the precomputing
trainers), and each trainer's peak memory alone in a fresh process (``--only NAME``).

    python benchmarks/bench_packing.py                       # CPU: hidden 256, 4 layers, vocab 8192
    python benchmarks/bench_packing.py --preset qwen2.5-0.5b  # GPU: Qwen2.5-0.5B's shape, bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
import trl
from bench_trainer import device_name
from common import interleaved, isolated_peaks, prepare, report_alone, speedups
from datasets import Dataset

from dpo_plugin.trl import DPOConfig, DPOTrainer

PRESETS = {
    "cpu": dict(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=8192,
    ),
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
}
TRAINERS = (
    "trl_default",
    "trl_precomputed",
    "trl_equal",
    "ours_none",
    "ours_padding_free",
    "ours_prefix_sharing",
    "ours_default",
)
#: prefix sharing with a given attention kernel (``packing.md``): the CUDA kernels are worth comparing on a GPU
KERNEL_ROWS = ("ours_prefix_sharing@sdpa", "ours_prefix_sharing@flex", "ours_prefix_sharing@varlen")


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer: each of ``w0 … w{n}`` is one token, so lengths are exact."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(vocab_size - 2)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")


def preference_rows(
    pairs: int,
    vocab_size: int,
    seed: int,
    max_length: int = 1024,
    *,
    prompt_median: float = 150,
    completion_median: float = 250,
    sigma: float = 0.6,
    shortest: int = 8,
) -> list[dict[str, str]]:
    """Pairs with log-normal lengths (medians ``prompt_median`` / ``completion_median`` tokens, spread ``sigma``),
    each sequence at most max_length."""
    rng = np.random.default_rng(seed)

    def length(median: float, cap: int) -> int:
        return int(np.clip(rng.lognormal(np.log(median), sigma), shortest, cap))

    def text(n: int) -> str:
        return " ".join(f"w{i}" for i in rng.integers(0, vocab_size - 2, n))

    rows = []
    for _ in range(pairs):
        prompt = length(prompt_median, max_length // 2)
        rows.append(
            {
                "prompt": text(prompt),
                "chosen": " " + text(length(completion_median, max_length - prompt - 1)),
                "rejected": " " + text(length(completion_median, max_length - prompt - 1)),
            }
        )
    return rows


def settings(name: str, workdir: Path, device: torch.device) -> tuple[type, type, dict]:
    common = dict(
        output_dir=str(workdir / name),
        bf16=device.type == "cuda",
        report_to="none",
        per_device_train_batch_size=8,
        max_length=1024,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        num_train_epochs=1,
    )
    if name.startswith("trl"):
        extra = {"trl_precomputed": {"precompute_ref_log_probs": True}, "trl_equal": {"gradient_checkpointing": False}}
        return trl.DPOTrainer, trl.DPOConfig, {**common, **extra.get(name, {})}
    if name == "ours_default":
        return DPOTrainer, DPOConfig, {**common, "reference_params": {"cache_dir": str(workdir / "cache")}}
    packing = name.removeprefix("ours_").split("@")[0]
    return DPOTrainer, DPOConfig, {**common, "gradient_checkpointing": False, "reference": "copy", "packing": packing}


def build(name: str, model_path: str, tokenizer, dataset, workdir: Path, device: torch.device):
    trainer_class, config_class, values = settings(name, workdir, device)
    start = time.perf_counter()
    trainer = trainer_class(model_path, args=config_class(**values), train_dataset=dataset, processing_class=tokenizer)
    if "@" in name:
        use_kernel(trainer, name.split("@")[1])
    setup = time.perf_counter() - start
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    return trainer, batch, setup


def use_kernel(trainer, kernel: str) -> None:
    """Compute the packed rows' attention with ``kernel`` (``sdpa``, ``flex``, ``varlen``), checked as the start-up
    probe checks it; RuntimeError when this device cannot run it."""
    from dpo_plugin.forward.layout_choice import layout_matches
    from dpo_plugin.forward.segment_kernels import kernels_for

    scorer = trainer.session.scorer
    if kernel not in kernels_for(scorer.device):
        raise RuntimeError(f"the {kernel} kernel is not offered on {scorer.device.type} (it needs CUDA)")
    collator = dataclasses.replace(scorer.collator, kernel=kernel)
    try:
        gap = layout_matches(scorer, collator, trainer.session.backend.padded_collator)
    except Exception as error:  # noqa: BLE001 -- the row is skipped, with the reason
        raise RuntimeError(f"the {kernel} kernel cannot run here: {type(error).__name__}: {error}") from error
    if not gap <= 5e-2:
        raise RuntimeError(f"the {kernel} kernel's log-probs differ from the padded ones by {gap:.3g} nats per token")
    trainer.data_collator = scorer.collator = collator


def saved_qwen2(shape: dict, workdir: Path) -> tuple[Path, object]:
    """A Qwen2 model of ``shape`` (seeded) with its word-level tokenizer, saved in ``workdir/model`` once."""
    tokenizer = word_tokenizer(shape["vocab_size"])
    model_path = workdir / "model"
    if not model_path.exists():
        torch.manual_seed(0)
        transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**shape)).save_pretrained(model_path)
        tokenizer.save_pretrained(model_path)
    return model_path, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per repetition")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=64, help="training pairs (the precompute pass scores them all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS + KERNEL_ROWS)
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dpo-bench-packing-"))
    shape = PRESETS[args.preset]
    model_path, tokenizer = saved_qwen2(shape, workdir)
    dataset = Dataset.from_list(preference_rows(args.pairs, shape["vocab_size"], args.seed))
    names = [args.only] if args.only else list(args.trainers)
    trainers, batches, setup = {}, {}, {}
    for name in list(names):
        try:
            trainers[name], batches[name], setup[name] = build(
                name, str(model_path), tokenizer, dataset, workdir, device
            )
        except RuntimeError as error:
            if "@" not in name:
                raise
            print(f"{name}: left out, {error}")
            names.remove(name)
            continue
        if args.only:
            report_alone(trainers[name], batches[name], args.warmup, args.steps, device)
            return
        prepare(trainers[name], batches[name], args.warmup, device)
    real_tokens = _real_tokens(batches)
    others = [n for n in ("trl_equal",) if n in names and n != names[0]]
    result = interleaved(trainers, batches, args.reps, args.steps, device, baseline=names[0], others=others)
    del trainers
    flags = [
        "--preset",
        args.preset,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--pairs",
        str(args.pairs),
        "--seed",
        str(args.seed),
        "--workdir",
        str(workdir),
    ]
    result["peak_alone_mib"] = isolated_peaks(__file__, flags, names)
    result.update(
        device=device_name(device),
        versions={"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        preset=args.preset,
        shape=shape,
        reps=args.reps,
        steps_per_rep=args.steps,
        real_tokens_per_step=real_tokens,
        setup_s=setup,
    )
    _print(result, names)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def _real_tokens(batches: dict) -> int:
    """The tokens of the 8 pairs without padding, as TRL counts them (its padded batch's attention mask)."""
    for batch in batches.values():
        if "attention_mask" in batch and batch["attention_mask"].dim() == 2:
            return int(batch["attention_mask"].sum())
        if "input_tokens" in batch:
            return int(batch["input_tokens"])
    raise ValueError("no batch says how many tokens it holds")


def _print(result: dict, names: list[str]) -> None:
    tokens = result["real_tokens_per_step"]
    print(
        f"device: {result['device']}; preset {result['preset']}; {tokens} real tokens per step (8 pairs); "
        f"versions {result['versions']}"
    )
    bases = list(result["ratios_to"])
    header = "".join(f"{'× ' + base + ' (IQR)':>26s}" for base in bases)
    print(f"{'trainer':22s} {'step':>9s} {'tokens/s':>9s}{header} {'setup':>8s} {'peak alone':>11s}")
    for name in names:
        step = result["median_step_s"][name]
        print(
            f"{name:22s} {step * 1000:7.0f} ms {tokens / step:9.0f}{speedups(result, name, 14)} "
            f"{result['setup_s'][name]:7.1f}s "
            f"{result['peak_alone_mib'][name]:8.0f} MiB"
        )
    print(
        f"(speed-ups are TRL's step time over each trainer's; {result['reps']} interleaved repetitions of "
        f"{result['steps_per_rep']} steps, medians)"
    )


if __name__ == "__main__":
    main()
