"""Contract: for TRL 1.16's loss types, our trainer and TRL's give the same loss and gradients.

Same tiny model (weights perturbed so policy != reference), same reference object, same pairs;
``compute_loss`` is called directly. In every batch layout (``packing``): TRL's padded rows (ours:
tolerance |a − b| ≤ 1e-5·|b| + 1e-7, gradients by relative norm) and the packed layouts (1e-4).
"""

from __future__ import annotations

import pytest
import trl
from trainer_fixtures import config_kwargs, policy_and_reference, preference_dataset

from dpo_plugin.trl import DPOConfig, DPOTrainer

TRL_LOSSES = [
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]
# TRL refuses exo_pair without label smoothing; robust and aot are checked with smoothing on.
LOSS_SETTINGS = {
    "exo_pair": {"label_smoothing": 1e-3},
    "robust": {"label_smoothing": 0.1},
    "aot": {"label_smoothing": 0.1},
}


PACKING = ["none", "padding_free", "prefix_sharing"]
TOLERANCE = {"none": 1e-5, "padding_free": 1e-4, "prefix_sharing": 1e-4}


def _loss_and_grads(trainer_cls, config_cls, tokenizer, tmp_path, **settings):
    policy, reference = policy_and_reference(len(tokenizer))
    args = config_cls(**config_kwargs(output_dir=str(tmp_path), **settings))
    trainer = trainer_cls(
        policy, ref_model=reference, args=args, train_dataset=preference_dataset(), processing_class=tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_same(ours, theirs, tolerance=1e-5):
    loss, grads = ours
    trl_loss, trl_grads = theirs
    assert abs(loss.item() - trl_loss.item()) <= tolerance * abs(trl_loss.item()) + 1e-7, (loss.item(), trl_loss.item())
    assert grads.keys() == trl_grads.keys() and grads
    for name, grad in grads.items():
        reference = trl_grads[name]
        assert (grad - reference).norm() <= tolerance * reference.norm() + 1e-9, name


@pytest.fixture(scope="module")
def trl_results(tmp_path_factory):
    """TRL's own loss and gradients, computed once per setting (shared by the three layouts)."""
    cache = {}

    def get(tokenizer, **settings):
        key = repr(sorted(settings.items()))
        if key not in cache:
            cache[key] = _loss_and_grads(
                trl.DPOTrainer, trl.DPOConfig, tokenizer, tmp_path_factory.mktemp("trl"), **settings
            )
        return cache[key]

    return get


@pytest.mark.parametrize("packing", PACKING)
@pytest.mark.parametrize("loss_type", TRL_LOSSES)
def test_each_trl_loss_matches(loss_type, packing, tokenizer, tmp_path, trl_results):
    settings = {"loss_type": [loss_type], **LOSS_SETTINGS.get(loss_type, {})}
    ours = _loss_and_grads(DPOTrainer, DPOConfig, tokenizer, tmp_path, packing=packing, **settings)
    _assert_same(ours, trl_results(tokenizer, **settings), TOLERANCE[packing])


@pytest.mark.parametrize(
    "settings",
    [
        {"loss_type": ["sigmoid", "sft", "hinge"], "loss_weights": [0.5, 1.0, 0.2]},
        {"loss_type": ["sigmoid"], "f_divergence_type": "forward_kl"},
        {"loss_type": ["ipo"], "f_divergence_type": "js_divergence"},
        {"loss_type": ["hinge"], "f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.3},
        {"loss_type": ["sigmoid", "sft"], "ld_alpha": 0.5},
        {"loss_type": ["sigmoid", "apo_zero"], "use_weighting": True},
        {"loss_type": ["robust"], "beta": 0.3, "label_smoothing": 0.2},
        {"loss_type": ["sigmoid", "ipo"], "truncation_mode": "keep_end", "max_length": 40},
        {"loss_type": ["sigmoid_norm"], "max_length": None},
    ],
    ids=[
        "mix-of-three",
        "forward_kl",
        "js_divergence",
        "alpha_divergence",
        "ld_alpha",
        "wpo",
        "beta",
        "keep_end",
        "no-max-length",
    ],
)
@pytest.mark.parametrize("packing", PACKING)
def test_trl_features_match(settings, packing, tokenizer, tmp_path, trl_results):
    ours = _loss_and_grads(DPOTrainer, DPOConfig, tokenizer, tmp_path, packing=packing, **settings)
    _assert_same(ours, trl_results(tokenizer, **settings), TOLERANCE[packing])


def test_a_plain_trl_config_is_accepted(tokenizer, tmp_path):
    """Our trainer given TRL's own DPOConfig trains exactly as TRL does with it."""
    settings = {"loss_type": ["ipo"], "beta": 0.2}
    _assert_same(
        _loss_and_grads(DPOTrainer, trl.DPOConfig, tokenizer, tmp_path, **settings),
        _loss_and_grads(trl.DPOTrainer, trl.DPOConfig, tokenizer, tmp_path, **settings),
    )
