"""Every built-in loss against values worked out independently in float64 with `math`, from the papers' formulas.

Two pairs: policy log-probs c, r; reference rc, rr; completion token counts ct, rt. With
u_w = c − rc, u_l = r − rr and Δ = u_w − u_l: pair 0 has u_w = 0.5, u_l = −1, Δ = 1.5; pair 1 has
u_w = 0, u_l = 1, Δ = −1.
"""

from __future__ import annotations

import math

import pytest
import torch

import dpo_plugin
from dpo_plugin import PairLogps

C, R, RC, RR, CT, RT = [-5.0, -6.0], [-7.0, -3.0], [-5.5, -6.0], [-6.0, -4.0], [3, 4], [5, 2]
U_W = [c - rc for c, rc in zip(C, RC)]
U_L = [r - rr for r, rr in zip(R, RR)]
D = [w - l for w, l in zip(U_W, U_L)]


def sig(x):
    return 1 / (1 + math.exp(-x))


def logsig(x):
    return math.log(sig(x))


def logps(**overrides):
    values = dict(chosen=C, rejected=R, ref_chosen=RC, ref_rejected=RR, chosen_tokens=CT, rejected_tokens=RT)
    values.update(overrides)
    return PairLogps(**{k: torch.tensor(v) if k.endswith("tokens") else torch.tensor(v, dtype=torch.float64) for k, v in values.items()})


def alpha_score(u, a):
    return (math.exp((a - 1) * u) - 1) / (a - 1)


B = 0.1
EXPECTED = {
    ("sigmoid", ()): [-logsig(B * d) for d in D],
    ("cdpo", (("label_smoothing", 0.2),)): [-(0.8) * logsig(B * d) - 0.2 * logsig(-B * d) for d in D],
    ("robust", (("label_smoothing", 0.2),)): [(-(0.8) * logsig(B * d) + 0.2 * logsig(-B * d)) / 0.6 for d in D],
    ("hinge", ()): [max(0.0, 1 - B * d) for d in D],
    ("exo_pair", (("label_smoothing", 1e-3),)): [
        sig(B * d) * (logsig(B * d) - math.log(1 - 1e-3)) + sig(-B * d) * (logsig(-B * d) - math.log(1e-3)) for d in D
    ],
    ("discopop", (("discopop_tau", 0.05),)): [
        -logsig(B * d) * (1 - sig(B * d / 0.05)) + math.exp(-B * d) * sig(B * d / 0.05) for d in D
    ],
    ("sigmoid_norm", ()): [-logsig(B * (w / ct - l / rt)) for w, l, ct, rt in zip(U_W, U_L, CT, RT)],
    ("dpop", (("dpop_lambda", 50.0),)): [-logsig(B * (d - 50 * max(0.0, rc - c))) for d, c, rc in zip(D, C, RC)],
    ("rdpo", (("alpha", 0.01),)): [-logsig(B * d + 0.01 * (ct - rt)) for d, ct, rt in zip(D, CT, RT)],
    ("ipo", ()): [(w / ct - l / rt - 1 / (2 * B)) ** 2 for w, l, ct, rt in zip(U_W, U_L, CT, RT)],
    ("ipo_paper", ()): [(d - 1 / (2 * B)) ** 2 for d in D],
    ("sppo_hard", ()): [(w - 0.5 / B) ** 2 + (l + 0.5 / B) ** 2 for w, l in zip(U_W, U_L)],
    ("cal_dpo", ()): [-logsig(w - l) + 0.5 * ((w - 1 / (2 * B)) ** 2 + (l + 1 / (2 * B)) ** 2) for w, l in zip(U_W, U_L)],
    ("nca_pair", ()): [-logsig(B * w) - 0.5 * logsig(-B * w) - 0.5 * logsig(-B * l) for w, l in zip(U_W, U_L)],
    ("bco_pair", ()): [-logsig(B * w) - logsig(-B * l) for w, l in zip(U_W, U_L)],
    ("apo_zero", ()): [1 - sig(B * w) + sig(B * l) for w, l in zip(U_W, U_L)],
    ("apo_down", ()): [sig(B * w) + 1 - sig(B * (w - l)) for w, l in zip(U_W, U_L)],
    # AOT sorts across the batch: sorted(c − r) = [−3, 2] and sorted(rc − rr) = [−2, 0.5] → δ = [−1, 1.5]
    ("aot", (("label_smoothing", 0.1),)): [-0.9 * logsig(B * x) - 0.1 * logsig(-B * x) for x in (-1.0, 1.5)],
    # sorted(u_w) = [0, 0.5], sorted(u_l) = [−1, 1] → δ = [1, −0.5]
    ("aot_unpaired", ()): [-logsig(B * x) for x in (1.0, -0.5)],
    ("simpo", (("beta", 2.0), ("gamma", 0.5))): [-logsig(2.0 * (c / ct - r / rt) - 0.5) for c, r, ct, rt in zip(C, R, CT, RT)],
    ("cpo", ()): [-logsig(B * (c - r)) + (-c / ct) for c, r, ct in zip(C, R, CT)],
    ("sft", ()): [-(sum(C)) / sum(CT)] * 2,
}


def orpo_expected(beta=0.1):
    out = []
    for c, r, ct, rt in zip(C, R, CT, RT):
        pc, pr = c / ct, r / rt
        log_odds = (pc - pr) - (math.log(1 - math.exp(pc)) - math.log(1 - math.exp(pr)))
        out.append(-pc - beta * logsig(log_odds))
    return out


EXPECTED[("orpo", ())] = orpo_expected()


# TRL computes EXO's ε and the α-divergence exponent in float32; those match to float32 precision.
FLOAT32_STEPS = {"exo_pair", "alpha_divergence"}


@pytest.mark.parametrize("key", list(EXPECTED), ids=[k[0] for k in EXPECTED])
def test_loss_value(key):
    name, params = key
    out = dpo_plugin.losses()[name](logps(), **dict(params))
    rtol = 1e-6 if name in FLOAT32_STEPS else 1e-10
    torch.testing.assert_close(out.losses, torch.tensor(EXPECTED[key], dtype=torch.float64), rtol=rtol, atol=1e-12)


def test_every_builtin_loss_has_a_value_test():
    builtin = {n for n, s in dpo_plugin.losses().items() if s.plugin.startswith("dpo_plugin.")}
    assert builtin - {k[0] for k in EXPECTED} == {"beta_dpo"}  # stateful and random: tested below


@pytest.mark.parametrize(
    "kind, score",
    [
        ("forward_kl", lambda u: 1 - math.exp(-u)),
        ("js_divergence", lambda u: math.log(2) + logsig(u)),
        ("alpha_divergence", lambda u: alpha_score(u, 0.3)),
    ],
)
def test_f_divergence_scores(kind, score):
    rtol = 1e-6 if kind in FLOAT32_STEPS else 1e-10
    out = dpo_plugin.losses()["sigmoid"](logps(), f_divergence_type=kind, f_alpha_divergence_coef=0.3)
    expected = [-logsig(B * (score(w) - score(l))) for w, l in zip(U_W, U_L)]
    torch.testing.assert_close(out.losses, torch.tensor(expected, dtype=torch.float64), rtol=rtol, atol=1e-12)
    ipo = dpo_plugin.losses()["ipo"](logps(), f_divergence_type=kind, f_alpha_divergence_coef=0.3)
    expected = [(score(w) / ct - score(l) / rt - 1 / (2 * B)) ** 2 for w, l, ct, rt in zip(U_W, U_L, CT, RT)]
    torch.testing.assert_close(ipo.losses, torch.tensor(expected, dtype=torch.float64), rtol=rtol, atol=1e-12)


def test_rewards_and_metrics():
    out = dpo_plugin.losses()["sigmoid"](logps(), beta=0.3)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.3 * w for w in U_W], dtype=torch.float64))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([0.3 * l for l in U_L], dtype=torch.float64))
    simpo = dpo_plugin.losses()["simpo"](logps())
    torch.testing.assert_close(simpo.chosen_rewards, torch.tensor([2.0 * c / ct for c, ct in zip(C, CT)], dtype=torch.float64))
    orpo = dpo_plugin.losses()["orpo"](logps())
    assert orpo.metrics["nll"].item() == pytest.approx(sum(-c / ct for c, ct in zip(C, CT)) / 2)


def test_sft_uses_the_plain_sums_with_ld_alpha():
    out = dpo_plugin.losses()["sft"](logps(chosen=[-1.0, -1.0], chosen_unweighted=C, rejected_unweighted=R))
    torch.testing.assert_close(out.losses, torch.tensor([-sum(C) / sum(CT)] * 2, dtype=torch.float64))


def test_beta_dpo_without_filtering_follows_the_moving_averages():
    """rho = 0: β_batch = β(1 + α(mean(M) − M₀)), M₀ the momentum average of the batch means (starting at 0)."""
    loss = dpo_plugin.losses()["beta_dpo"].create(beta=0.1, alpha=0.6, rho=0.0, momentum=0.9)
    mean0 = 0.1 * sum(D) / 2  # 0.9 · 0 + 0.1 · mean(D)
    beta1 = 0.1 * (1 + 0.6 * (sum(D) / 2 - mean0))
    out = loss(logps())
    assert out.metrics["beta"] == pytest.approx(beta1)
    torch.testing.assert_close(out.losses, torch.tensor([-logsig(beta1 * d) for d in D], dtype=torch.float64))
    mean1 = 0.9 * mean0 + 0.1 * sum(D) / 2
    assert loss(logps()).metrics["beta"] == pytest.approx(0.1 * (1 + 0.6 * (sum(D) / 2 - mean1)))


def test_beta_dpo_filtering_keeps_a_fraction_and_rescales():
    n = 10
    pairs = logps(**{k: [v[0]] * n for k, v in dict(chosen=C, rejected=R, ref_chosen=RC, ref_rejected=RR, chosen_tokens=CT, rejected_tokens=RT).items()})
    loss = dpo_plugin.losses()["beta_dpo"].create(rho=0.2)
    out = loss(pairs)
    kept = out.losses != 0
    assert int(kept.sum()) == 8 and out.metrics["kept_fraction"] == pytest.approx(0.8)
    # the kept pairs are identical, so each carries −log σ(β_b·Δ)·n/kept and the batch mean is −log σ(β_b·Δ)
    assert out.losses.mean().item() == pytest.approx(-logsig(out.metrics["beta"] * D[0]))
    state = (loss.fn.gap_mean, loss.fn.gap_std)
    with torch.no_grad():
        evaluation = loss(pairs)
    assert (evaluation.losses != 0).all() and (loss.fn.gap_mean, loss.fn.gap_std) == state
