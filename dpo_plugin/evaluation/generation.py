"""Batched, left-padded generation from a causal LM, and log-probabilities of generated completions."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Generations:
    """Generated completions: token ids per prompt (prompt excluded) and their decoded text.

    ``finished[i]``: the completion ended with an EOS token (else it stopped at ``max_new_tokens``);
    ``lengths[i]``: its token count, a final EOS not counted.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    finished: list[bool] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokens that end a generation: the tokenizer's EOS and the model's generation config's (an int or a list)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {int(i) for i in ids if i is not None}


def prompt_token_ids(tokenizer: Any, prompt: Any) -> list[int]:
    """A prompt's token ids as training saw them: the chat template (with the generation prompt) for messages."""
    if isinstance(prompt, list):
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return list(tokenizer(prompt)["input_ids"])


@contextlib.contextmanager
def _left_padding(tokenizer: Any) -> Iterator[None]:
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    desc: str = "Generating",
) -> Generations:
    """Generate one completion per prompt, in batches with left padding, with a progress bar."""
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    set_seed(seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    all_prompts = [prompt_token_ids(tokenizer, p) for p in prompts]
    completions: list[list[int]] = []
    was_training = model.training
    model.eval()
    settings = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad_id)
    if do_sample:
        settings.update(temperature=temperature, top_p=top_p)
    try:
        with _left_padding(tokenizer), torch.no_grad():
            for start in tqdm(range(0, len(all_prompts), batch_size), desc=desc, leave=False):
                chunk = all_prompts[start : start + batch_size]
                padded = tokenizer.pad({"input_ids": chunk}, return_tensors="pt").to(device)
                output = model.generate(**padded, **settings)
                new = output[:, padded["input_ids"].shape[1] :]
                for row in new.tolist():
                    completions.append(_strip_after_eos(row, tokenizer.eos_token_id, pad_id))
    finally:
        model.train(was_training)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    ends = eos_ids(model, tokenizer)
    finished = [bool(ids) and ids[-1] in ends for ids in completions]
    lengths = [len(ids) - done for ids, done in zip(completions, finished)]
    return Generations(all_prompts, completions, [t.strip() for t in texts], finished, lengths)


def cached_generate(
    cache: dict[Any, Generations],
    which: str,
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    settings: dict[str, Any],
) -> Generations:
    """:func:`generate` once per ``which`` model, prompts and settings:
    a second check asking for the same reuses them."""
    key = (which, len(prompts), repr(prompts[:1]), tuple(sorted(settings.items())))
    if key not in cache:
        cache[key] = generate(model, tokenizer, prompts, desc=f"Generating ({which})", **settings)
    return cache[key]


def _strip_after_eos(ids: list[int], eos_id: int | None, pad_id: int | None) -> list[int]:
    """Generated ids up to and including the first EOS, without trailing padding."""
    if eos_id is not None and eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    while ids and ids[-1] == pad_id:
        ids = ids[:-1]
    return ids


def completion_logps(
    model: Any, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]], *, batch_size: int = 8
) -> list[tuple[float, int]]:
    """``(Σ log p(completion | prompt), completion length)`` per example, right-padded batches, no grad."""
    import torch

    device = next(model.parameters()).device
    results: list[tuple[float, int]] = []
    with torch.no_grad():
        for start in range(0, len(prompt_ids), batch_size):
            prompts = prompt_ids[start : start + batch_size]
            completions = completion_ids[start : start + batch_size]
            sequences = [p + c for p, c in zip(prompts, completions)]
            width = max(len(s) for s in sequences)
            ids = torch.zeros(len(sequences), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            target = torch.zeros_like(ids, dtype=torch.bool)
            for row, (p, s) in enumerate(zip(prompts, sequences)):
                ids[row, : len(s)] = torch.tensor(s)
                mask[row, : len(s)] = 1
                target[row, len(p) : len(s)] = True
            ids, mask, target = ids.to(device), mask.to(device), target.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            token_logps = token_logps * target[:, 1:]
            sums = token_logps.sum(dim=1).tolist()
            counts = target[:, 1:].sum(dim=1).tolist()
            results.extend(zip(sums, counts))
    return results
