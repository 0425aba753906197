"""Packed layouts: the rows built by hand-worked examples, the attention per segment against a padded forward,
the rejected branch blind to the chosen one, the training run in each mode, and every fallback (``auto``'s choice
by cost: test_layout_choice.py)."""

from __future__ import annotations

import logging

import pytest
import torch
from peft import PrefixTuningConfig
from trainer_fixtures import config_kwargs, preference_dataset
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.models.llama.modeling_llama import LlamaAttention
from trl.trainer.dpo_trainer import DataCollatorForPreference

from dpo_plugin.errors import ConfigError
from dpo_plugin.forward import segment_kernels
from dpo_plugin.forward.attention import ATTENTION
from dpo_plugin.forward.packing import PLAN, SEGMENTED, Job, SegmentPlan, pack
from dpo_plugin.forward.segment_kernels import gathered, length_buckets
from dpo_plugin.trl import DPOConfig, DPOTrainer

PAIRS = [
    {"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9], "rejected_ids": [10, 11, 12]},
    {"prompt_ids": [20, 21], "chosen_ids": [22], "rejected_ids": [23]},
]


def test_prefix_sharing_row_by_hand():
    batch = pack(PAIRS, max_length=None, truncation_mode="keep_start", share_prompt=True)
    # pair 0: prompt 5 6 7, chosen 8 9, p' = 7, rejected 10 11 12; pair 1: prompt 20 21, chosen 22, p' = 21, rejected 23
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 7, 10, 11, 12, 20, 21, 22, 21, 23]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 3, 4, 5, 0, 1, 2, 1, 2]]
    # sequences: 0 = chosen of pair 0, 1 = chosen of pair 1, 2 = rejected of pair 0, 3 = rejected of pair 1
    assert batch["completion_of"].tolist() == [[-1, -1, -1, 0, 0, -1, 2, 2, 2, -1, -1, 1, -1, 3]]
    assert batch["packed_labels"].tolist() == [[-100, -100, -100, 8, 9, -100, 10, 11, 12, -100, -100, 22, -100, 23]]
    assert batch[PLAN].jobs == (
        Job(0, 5, ((0, 5),)),
        Job(5, 9, ((0, 2), (5, 9))),  # p' and the rejected tokens: the prompt less its last token, then themselves
        Job(9, 12, ((9, 12),)),
        Job(12, 14, ((9, 10), (12, 14))),
    )
    assert batch["tokens"].tolist() == [[2, 1, 3, 1]] and batch["predicted"].tolist() == [[2, 1, 3, 1]]
    assert batch["input_tokens"].item() == (3 + 2) + (3 + 3) + (2 + 1) + (2 + 1)  # TRL's padded rows hold 17
    # LD-DPO: tokens past the pair's shorter completion (pair 0: 2, so the rejected 12 is in the tail)
    assert batch["ld_tail"].tolist() == [[False] * 8 + [True] + [False] * 5]
    # each job as one causal sequence over its keys: the rejected branch [p' 10 11 12] becomes [5 6 p' 10 11 12],
    # whose last 4 outputs are the branch's
    sequences = gathered(batch[PLAN], [[0], [1], [2], [3]], torch.device("cpu"))
    assert sequences.index.tolist() == [0, 1, 2, 3, 4] + [0, 1, 5, 6, 7, 8] + [9, 10, 11] + [9, 12, 13]
    assert sequences.output.tolist() == [0, 1, 2, 3, 4] + [7, 8, 9, 10] + [11, 12, 13] + [15, 16]
    assert sequences.cu_seqlens.tolist() == [0, 5, 11, 14, 17]
    # in length buckets, right-padded with position 0: [5 6 3 3] keys → groups {3, 3} and {5, 6}
    buckets = gathered(batch[PLAN], [[2, 3], [0, 1]], torch.device("cpu"), multiple=8)
    assert buckets.index.tolist() == [9, 10, 11, 9, 12, 13] + [0, 1, 2, 3, 4, 0] + [0, 1, 5, 6, 7, 8] + [0] * 6
    assert buckets.output.tolist() == [6, 7, 8, 9, 10] + [14, 15, 16, 17] + [0, 1, 2] + [4, 5]
    assert buckets.shapes == ((2, 3), (2, 6))


def test_length_buckets_minimise_padded_work_plus_a_cost_per_call():
    lengths = [5, 6, 3, 3]
    # one call: 4 × 6² / 2 + c; {3, 3} {5, 6}: 2 × 3² / 2 + 2 × 6² / 2 + 2c; {3, 3} {5} {6}: 9 + 12.5 + 18 + 3c
    assert length_buckets(lengths, call_cost=1000) == [[2, 3, 0, 1]]  # 1072 against 2045 and 3039.5
    assert length_buckets(lengths, call_cost=10) == [[2, 3], [0, 1]]  # 65 against 82 and 69.5
    assert length_buckets(lengths, call_cost=1) == [[2, 3], [0], [1]]  # 42.5 against 73 and 47
    assert length_buckets([7], call_cost=0) == [[0]] and length_buckets([], call_cost=1) == []


def test_padding_free_row_with_truncation_and_padding():
    batch = pack(
        PAIRS, max_length=4, truncation_mode="keep_start", share_prompt=False, pad_token_id=0, pad_to_multiple_of=8
    )
    # truncated as TRL's collator truncates, each pair's sequences side by side: [5 6 7 8] [5 6 7 10] [20 21 22]
    # [20 21 23]; then 0-padding to 16
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 5, 6, 7, 10, 20, 21, 22, 20, 21, 23, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 0, 1]]
    assert batch["completion_of"].tolist() == [[-1, -1, -1, 0, -1, -1, -1, 2, -1, -1, 1, -1, -1, 3, -1, -1]]
    assert [j.ranges for j in batch[PLAN].jobs] == [((0, 4),), ((4, 8),), ((8, 11),), ((11, 14),), ((14, 16),)]
    assert batch["tokens"].tolist() == [[1, 1, 1, 1]] and batch["input_tokens"].tolist() == [14]


def test_keep_end_truncation_that_cuts_the_prompt_does_not_share_it():
    pair = {"prompt_ids": [1, 2, 3, 4], "chosen_ids": [5, 6], "rejected_ids": [7]}
    batch = pack([pair], max_length=5, truncation_mode="keep_end", share_prompt=True)
    # chosen keeps [2 3 4 5 6], rejected [1 2 3 4 7]: different prompts, so two sequences
    assert batch["input_ids"].tolist() == [[2, 3, 4, 5, 6, 1, 2, 3, 4, 7]]
    assert [j.ranges for j in batch[PLAN].jobs] == [((0, 5),), ((5, 10),)]


def _qwen2(**overrides):
    torch.manual_seed(0)
    config = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return Qwen2ForCausalLM(Qwen2Config(**{**config, **overrides})).eval()


def _llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    return LlamaForCausalLM(config).eval()


def _sequence_logps(model, batch):
    """Σ log p over each sequence's counted completion tokens, from a plain forward's logits (no fused head)."""
    packed = PLAN in batch
    kwargs = (
        {"position_ids": batch["position_ids"], "attention_mask": SEGMENTED, PLAN: batch[PLAN]}
        if packed
        else {"attention_mask": batch["attention_mask"]}
    )
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], **kwargs).logits.double()
    per_token = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    if not packed:
        return (per_token * batch["completion_mask"][:, 1:]).sum(dim=1)
    targets = batch["completion_of"][0, 1:]
    return torch.zeros(batch["tokens"].numel(), dtype=torch.float64).index_add(
        0, targets[targets >= 0], per_token[0][targets >= 0]
    )


def _varlen_on_cpu(q, k, v, cu, longest, scale):
    """What flash attention's varlen kernel computes (causal attention within each ``cu_seqlens`` span), on a CPU."""
    spans = zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)
    return torch.cat(
        [
            torch.nn.functional.scaled_dot_product_attention(
                *(t[a:b].transpose(0, 1) for t in (q, k, v)), is_causal=True, scale=scale, enable_gqa=True
            ).transpose(0, 1)
            for a, b in spans
        ]
    )


@pytest.mark.parametrize("model", [_qwen2, _llama], ids=["qwen2-gqa", "llama"])
@pytest.mark.parametrize("share", [False, True], ids=["padding_free", "prefix_sharing"])
@pytest.mark.parametrize("truncation", [(None, "keep_start"), (4, "keep_start"), (4, "keep_end")])
@pytest.mark.parametrize("kernel", ["sdpa", "flex", "varlen"])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_packed_log_probs_equal_the_padded_ones(model, share, truncation, kernel, monkeypatch):
    """Every kernel's forward (flex without gradients, as on a CPU; varlen's layout through a CPU stand-in for
    flash attention's kernel, which needs CUDA) against TRL's padded rows."""
    if kernel == "varlen":
        monkeypatch.setattr(segment_kernels, "varlen_function", lambda: _varlen_on_cpu)
    max_length, mode = truncation
    model = model()
    pairs = PAIRS + [{"prompt_ids": [30, 31, 32, 33, 34], "chosen_ids": [35, 36, 37], "rejected_ids": [38, 39]}]
    padded = _sequence_logps(
        model, DataCollatorForPreference(pad_token_id=0, max_length=max_length, truncation_mode=mode)(pairs)
    )
    model.set_attn_implementation(ATTENTION)
    batch = pack(pairs, max_length=max_length, truncation_mode=mode, share_prompt=share, kernel=kernel)
    torch.testing.assert_close(_sequence_logps(model, batch), padded, rtol=1e-5, atol=1e-5)


def _leaking(batch):
    """``batch`` with a plan whose rejected branch also attends to the chosen tokens (what the test must catch)."""
    chosen, branch = batch[PLAN].jobs
    leak = Job(branch.start, branch.end, ((chosen.start, branch.end),))
    return {**batch, PLAN: SegmentPlan((chosen, leak))}


def test_the_rejected_branch_never_sees_the_chosen_one():
    model = _qwen2()
    model.set_attn_implementation(ATTENTION)
    pair = {"prompt_ids": [3, 4, 5, 6], "chosen_ids": [7, 8, 9], "rejected_ids": [10, 11]}
    other = {**pair, "chosen_ids": [90, 91, 92, 93, 94]}  # another chosen answer, longer
    batches = [pack([p], max_length=None, truncation_mode="keep_start", share_prompt=True) for p in (pair, other)]
    first, second = (_sequence_logps(model, batch) for batch in batches)
    # the rejected answer's log-prob is the same (up to BLAS blocking over rows of other lengths: ~1e-8 in float64)
    assert abs(first[1] - second[1]) < 1e-6
    assert abs(first[0] - second[0]) > 1  # the chosen ones differ
    # a branch that saw the chosen tokens would differ by far more than that tolerance
    leaked = [_sequence_logps(model, _leaking(batch))[1] for batch in batches]
    assert abs(leaked[0] - leaked[1]) > 1e-3 and abs(leaked[0] - first[1]) > 1e-3


def _trainer(tmp_path, model=None, **overrides):
    from dpo_plugin.testing.tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    model = tiny_model(len(tokenizer)) if model is None else model
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), **overrides))
    return DPOTrainer(
        model,
        args=args,
        train_dataset=preference_dataset(),
        eval_dataset=preference_dataset(4),
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("packing", ["padding_free", "prefix_sharing"])
@pytest.mark.parametrize("reference", ["copy", "precomputed"])
def test_training_in_each_layout(packing, reference, tmp_path):
    trainer = _trainer(
        tmp_path,
        packing=packing,
        reference=reference,
        max_steps=2,
        reference_params={"cache_dir": str(tmp_path / "c")} if reference == "precomputed" else None,
        eval_strategy="steps",
        eval_steps=2,
    )
    assert trainer.session.layout == packing and PLAN in trainer.data_collator([trainer.train_dataset[0]])
    trainer.train()
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) for e in logged)
    assert any("eval_loss" in e for e in trainer.state.log_history)


def test_the_packed_batch_layout_changes_no_number_of_a_training_run(tmp_path):
    """Two steps of training, padded and packed, end in the same weights (float32)."""
    weights = {}
    for packing in ("none", "prefix_sharing"):
        trainer = _trainer(tmp_path / packing, packing=packing, max_steps=2, reference="copy")
        trainer.train()
        weights[packing] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    for name, value in weights["none"].items():
        torch.testing.assert_close(weights["prefix_sharing"][name], value, rtol=1e-4, atol=1e-6)


class PlanBlindAttention(LlamaAttention):
    """An attention that drops the keywords it is given: a model whose attention cannot take the layout."""

    def forward(self, *args, **kwargs):
        kwargs.pop(PLAN, None)
        return super().forward(*args, **kwargs)


def _plan_blind_model():
    from dpo_plugin.testing.tiny import tiny_model, tiny_tokenizer

    model = tiny_model(len(tiny_tokenizer()))
    for layer in model.model.layers:
        layer.self_attn.__class__ = PlanBlindAttention
    return model


@pytest.mark.parametrize(
    "make, overrides, reason",
    [
        (_plan_blind_model, {}, "differ from the padded ones"),
        (lambda: _eager_model(), {}, "attention implementation is 'eager'"),
        (
            lambda: None,
            {"peft_config": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)},
            "prompt-learning",
        ),
        (lambda: None, {"data_collator": DataCollatorForPreference(pad_token_id=256)}, "a data_collator was passed"),
    ],
    ids=["attention-ignores-the-plan", "eager", "prefix-tuning", "own-collator"],
)
def test_auto_falls_back_to_padding_and_an_explicit_mode_is_an_error(make, overrides, reason, tmp_path, caplog):
    from dpo_plugin.testing.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    constructor = {k: overrides[k] for k in ("peft_config", "data_collator") if k in overrides}

    def build(packing):
        from dpo_plugin.testing.tiny import tiny_model

        model = make() or tiny_model(len(tokenizer))
        args = DPOConfig(**config_kwargs(output_dir=str(tmp_path), packing=packing, max_steps=1))
        return DPOTrainer(
            model, args=args, train_dataset=preference_dataset(), processing_class=tokenizer, **constructor
        )

    with caplog.at_level(logging.INFO, logger="dpo_plugin"):
        trainer = build("auto")
    assert trainer.session.layout == "none" and "packing: auto → none" in caplog.text and reason in caplog.text
    with pytest.raises(ConfigError, match=f"packing: prefix_sharing cannot be used with this model: .*{reason}"):
        build("prefix_sharing")


def _eager_model():
    from dpo_plugin.testing.tiny import tiny_model, tiny_tokenizer

    model = tiny_model(len(tiny_tokenizer()))
    model.set_attn_implementation("eager")
    return model


def test_sliding_window_and_experts_are_not_packed():
    from dpo_plugin.forward.attention import support

    assert "sliding-window" in support(_qwen2(use_sliding_window=True, sliding_window=4, max_window_layers=1))
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    moe = Qwen2MoeForCausalLM(
        Qwen2MoeConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            moe_intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            num_experts=2,
            num_experts_per_tok=1,
        )
    )
    assert "mixture of experts" in support(moe)
    assert support(_qwen2()) is None


def test_trl_padding_free_means_packing_padding_free():
    assert DPOConfig(**config_kwargs(padding_free=True)).packing == "padding_free"
    with pytest.raises(
        ConfigError, match="padding_free: true .* means packing: padding_free, but packing is 'prefix_sharing'"
    ):
        DPOConfig(**config_kwargs(padding_free=True, packing="prefix_sharing"))
    with pytest.raises(ConfigError, match="packing must be one of auto, none, padding_free, prefix_sharing"):
        DPOConfig(**config_kwargs(packing="zip"))


def test_packing_with_a_lora_adapter_and_its_reference(tmp_path):
    trainer = _trainer(tmp_path, packing="prefix_sharing", adapter="lora", max_steps=1)
    assert trainer.session.layout == "prefix_sharing" and trainer.session.reference_strategy.delegate.name == "adapter"
    trainer.train()


def test_a_model_that_runs_its_own_attention_is_never_packed():
    """Falcon and StableLM do not call registered attention functions: switching them would change nothing."""
    from transformers import FalconConfig, FalconForCausalLM

    from dpo_plugin.forward.attention import support

    falcon = FalconForCausalLM(FalconConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4))
    assert "runs its own attention code" in support(falcon)


def test_compute_metrics_keeps_the_padded_layout(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dpo_plugin"):
        trainer = DPOTrainer(
            _qwen2_trainable(),
            args=DPOConfig(**config_kwargs(output_dir=str(tmp_path), max_steps=1)),
            train_dataset=preference_dataset(),
            processing_class=_tokenizer(),
            compute_metrics=lambda prediction: {},
        )
    assert trainer.session.layout == "none" and "compute_metrics expects TRL's padded rows" in caplog.text


def _tokenizer():
    from dpo_plugin.testing.tiny import tiny_tokenizer

    return tiny_tokenizer()


def _qwen2_trainable():
    from dpo_plugin.testing.tiny import tiny_model

    return tiny_model(len(_tokenizer()))


def test_per_model_answers_once_per_model_object_and_keeps_no_model_alive():
    """accelerate's unwrap and PEFT checks read package metadata on every call; the forward asks once per model."""
    import gc
    import weakref

    from dpo_plugin.forward.engine import per_model

    asked = []

    def unwrap(model):
        asked.append(model)
        return getattr(model, "inner", model)

    remembered = per_model(unwrap)
    plain, wrapper = torch.nn.Linear(2, 2), torch.nn.Module()
    wrapper.inner = torch.nn.Linear(2, 2)
    for _ in range(3):
        assert remembered(plain) is plain and remembered(wrapper) is wrapper.inner
    assert asked == [plain, wrapper]
    watch = weakref.ref(plain)
    del plain, asked[:]
    gc.collect()
    assert watch() is None  # remembering its answer did not keep the model alive
