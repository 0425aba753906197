"""Every built-in loss against values worked out independently in float64 with `math`.

The expected values are written out here from the formulas, never from the package's helpers. Losses
named after a TRL ``loss_type`` follow TRL 1.16's ``DPOTrainer._compute_loss`` (including its
length-normalised IPO, the ``clamp(min=1)`` of token counts and the f-divergence scores); the others
follow their papers (cited at each formula).

Three pairs: policy log-probs c (chosen), r (rejected); reference rc, rr; completion token counts
ct, rt. With u_w = c − rc, u_l = r − rr and Δ = u_w − u_l:
u_w = (0.5, −0.8, 1.0), u_l = (−1.0, 1.0, −1.0), Δ = (1.5, −1.8, 2.0).
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

import dpo_plugin
from dpo_plugin import PairLogps

C = (-5.0, -6.0, -12.0)
R = (-7.0, -3.0, -11.0)
RC = (-5.5, -5.2, -13.0)
RR = (-6.0, -4.0, -10.0)
CT = (3, 4, 10)
RT = (5, 2, 8)
PAIRS = list(zip(C, R, RC, RR, CT, RT))
U_W = [c - rc for c, _, rc, _, _, _ in PAIRS]
U_L = [r - rr for _, r, _, rr, _, _ in PAIRS]
D = [w - u_l for w, u_l in zip(U_W, U_L)]
B = 0.1  # every loss's default β except SimPO's


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def make_logps(**overrides) -> PairLogps:
    values = {
        "chosen": C,
        "rejected": R,
        "ref_chosen": RC,
        "ref_rejected": RR,
        "chosen_tokens": CT,
        "rejected_tokens": RT,
    }
    values.update(overrides)
    return PairLogps(
        **{
            k: v if v is None else torch.tensor(v) if k.endswith("tokens") else torch.tensor(v, dtype=torch.float64)
            for k, v in values.items()
        }
    )


def assert_values(actual: torch.Tensor, expected, rtol: float = 1e-12) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=rtol, atol=1e-12)


# --- losses built on the f-divergence scores s = f'(π/π_ref) (TRL: `delta_score`, `chosen_scores`) ---------------


def alpha_score(u: float, a: float) -> float:
    """TRL: (exp(min((α−1)·u, 80)) − 1)/(α − 1), the exponent clamped so exp stays representable."""
    return (math.exp(min((a - 1) * u, 80.0)) - 1) / (a - 1)


F_SCORES = {
    "reverse_kl": lambda u: u,
    "forward_kl": lambda u: 1 - math.exp(-u),
    "js_divergence": lambda u: math.log(2) + logsig(u),
    "alpha_divergence": lambda u: alpha_score(u, 0.3),
}

# name → (params, loss of one pair from its scores s_w, s_l and token counts)
F_DIVERGENCE_LOSSES = {
    # Rafailov et al. 2023: −log σ(β·Δs)
    "sigmoid": ({}, lambda sw, sl, ct, rt: -logsig(B * (sw - sl))),
    # SLiC (Zhao et al. 2023): max(0, 1 − β·Δs)
    "hinge": ({}, lambda sw, sl, ct, rt: max(0.0, 1 - B * (sw - sl))),
    # Chowdhury et al. 2024, TRL: (−(1−ε)·log σ(βΔs) + ε·log σ(−βΔs)) / (1 − 2ε)
    "robust": (
        {"label_smoothing": 0.2},
        lambda sw, sl, ct, rt: (-0.8 * logsig(B * (sw - sl)) + 0.2 * logsig(-B * (sw - sl))) / (1 - 0.4),
    ),
    # Ji et al. 2024, Eq. 16: KL((σ(z), σ(−z)) ‖ (1−ε, ε)), z = βΔs
    "exo_pair": (
        {"label_smoothing": 1e-3},
        lambda sw, sl, ct, rt: (
            sig(B * (sw - sl)) * (logsig(B * (sw - sl)) - math.log(1 - 1e-3))
            + sig(-B * (sw - sl)) * (logsig(-B * (sw - sl)) - math.log(1e-3))
        ),
    ),
    # Lu et al. 2024, Eq. 5 as in TRL: (1 − σ(z/τ))·(−log σ(z)) + σ(z/τ)·e^{−z}
    "discopop": (
        {"discopop_tau": 0.05},
        lambda sw, sl, ct, rt: (
            -logsig(B * (sw - sl)) * (1 - sig(B * (sw - sl) / 0.05))
            + math.exp(-B * (sw - sl)) * sig(B * (sw - sl) / 0.05)
        ),
    ),
    # TRL sigmoid_norm: −log σ(β·(s_w/|y_w| − s_l/|y_l|))
    "sigmoid_norm": ({}, lambda sw, sl, ct, rt: -logsig(B * (sw / ct - sl / rt))),
    # TRL ipo (Azar et al. 2023, Eq. 17, per-token scores): (s_w/|y_w| − s_l/|y_l| − 1/(2β))²
    "ipo": ({}, lambda sw, sl, ct, rt: (sw / ct - sl / rt - 1 / (2 * B)) ** 2),
}

# TRL computes EXO's ε and the α-divergence exponent in float32: those agree to float32 precision.
FLOAT32_STEPS = {"exo_pair", "alpha_divergence"}


@pytest.mark.parametrize("kind", list(F_SCORES))
@pytest.mark.parametrize("name", list(F_DIVERGENCE_LOSSES))
def test_f_divergence_losses(name, kind):
    params, formula = F_DIVERGENCE_LOSSES[name]
    score = F_SCORES[kind]
    expected = [formula(score(w), score(u_l), ct, rt) for w, u_l, ct, rt in zip(U_W, U_L, CT, RT)]
    out = dpo_plugin.losses()[name](make_logps(), f_divergence_type=kind, f_alpha_divergence_coef=0.3, **params)
    assert_values(out.losses, expected, rtol=1e-6 if {name, kind} & FLOAT32_STEPS else 1e-12)


def test_the_losses_with_f_divergence_are_those_trl_builds_on_the_scores():
    supported = {n for n, s in dpo_plugin.losses().items() if s.supports_f_divergence}
    assert supported == set(F_DIVERGENCE_LOSSES)


def test_alpha_divergence_at_alpha_one_is_reverse_kl_and_saturates_like_trl():
    at_one = dpo_plugin.losses()["sigmoid"](
        make_logps(), f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.0
    )
    assert_values(at_one.losses, [-logsig(B * d) for d in D])
    # u_w = −1000 with α = 0.5: the exponent 500 is clamped to 80, so s_w = (e^80 − 1)/(−0.5)
    far = make_logps(chosen=(-1005.5, -6.0, -12.0))
    out = dpo_plugin.losses()["hinge"](far, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.5)
    s_w = (math.exp(80.0) - 1) / -0.5
    s_l = (math.exp(-0.5 * U_L[0]) - 1) / -0.5
    assert out.losses[0].item() == pytest.approx(max(0.0, 1 - B * (s_w - s_l)), rel=1e-6)


def test_hinge_is_zero_beyond_the_margin():
    """max(0, 1 − βΔ) = 0 once Δ ≥ 1/β = 10: pair 0 gets Δ = 12.5."""
    out = dpo_plugin.losses()["hinge"](make_logps(chosen=(6.0, -6.0, -12.0)))
    assert_values(out.losses, [0.0, 1 - B * D[1], 1 - B * D[2]])


def test_unknown_f_divergence_type_is_an_error():
    with pytest.raises(ValueError, match="Unknown f_divergence_type 'kl'.*reverse_kl, forward_kl"):
        dpo_plugin.losses()["sigmoid"](make_logps(), f_divergence_type="kl")


def test_exo_pair_refuses_zero_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing > 0"):
        dpo_plugin.losses()["exo_pair"](make_logps(), label_smoothing=0.0)


# --- the other losses ---------------------------------------------------------------------------------------------


def aot_deltas() -> list[float]:
    """TRL aot: sort(c − r) − sort(rc − rr), each sorted over the batch."""
    policy = sorted(c - r for c, r, _, _, _, _ in PAIRS)
    reference = sorted(rc - rr for _, _, rc, rr, _, _ in PAIRS)
    return [p - q for p, q in zip(policy, reference)]


def aot_unpaired_deltas() -> list[float]:
    """TRL aot_unpaired: sort(u_w) − sort(u_l)."""
    return [w - u_l for w, u_l in zip(sorted(U_W), sorted(U_L))]


def orpo_expected(beta: float) -> list[float]:
    """Hong et al. 2024 (ORPO): −p_w − λ·log σ(log odds_w − log odds_l), p = c/|y| the mean token log-prob,
    odds = e^p/(1 − e^p), λ = beta."""
    out = []
    for c, r, _, _, ct, rt in PAIRS:
        pc, pr = c / ct, r / rt
        log_odds = (pc - math.log(1 - math.exp(pc))) - (pr - math.log(1 - math.exp(pr)))
        out.append(-pc - beta * logsig(log_odds))
    return out


EXPECTED = {
    # Mitchell 2023 (cDPO): −(1−ε) log σ(βΔ) − ε log σ(−βΔ)
    "cdpo": ({"label_smoothing": 0.2}, [-0.8 * logsig(B * d) - 0.2 * logsig(-B * d) for d in D]),
    # Pal et al. 2024 (DPOP): −log σ(β·(Δ − λ·max(0, rc − c)))
    "dpop": (
        {"dpop_lambda": 50.0},
        [-logsig(B * (d - 50 * max(0.0, rc - c))) for d, (c, _, rc, _, _, _) in zip(D, PAIRS)],
    ),
    # Park et al. 2024 (R-DPO): −log σ(βΔ + α·(|y_w| − |y_l|))
    "rdpo": ({"alpha": 0.01}, [-logsig(B * d + 0.01 * (ct - rt)) for d, ct, rt in zip(D, CT, RT)]),
    # Azar et al. 2023, Eq. 17 on summed log-probs: (Δ − 1/(2β))²
    "ipo_paper": ({}, [(d - 1 / (2 * B)) ** 2 for d in D]),
    # TRL sppo_hard (Wu et al. 2024, Eq. 4.7 with P ∈ {0, 1}): (u_w − 1/(2β))² + (u_l + 1/(2β))²
    "sppo_hard": ({}, [(w - 0.5 / B) ** 2 + (u_l + 0.5 / B) ** 2 for w, u_l in zip(U_W, U_L)]),
    # Xiao et al. 2024 (Cal-DPO): −log σ(u_w − u_l) + ½[(u_w − 1/(2β))² + (u_l + 1/(2β))²]
    "cal_dpo": (
        {},
        [-logsig(w - u_l) + 0.5 * ((w - 1 / (2 * B)) ** 2 + (u_l + 1 / (2 * B)) ** 2) for w, u_l in zip(U_W, U_L)],
    ),
    # TRL nca_pair: −log σ(βu_w) − ½ log σ(−βu_w) − ½ log σ(−βu_l)
    "nca_pair": ({}, [-logsig(B * w) - 0.5 * logsig(-B * w) - 0.5 * logsig(-B * u_l) for w, u_l in zip(U_W, U_L)]),
    # TRL bco_pair: −log σ(βu_w) − log σ(−βu_l)
    "bco_pair": ({}, [-logsig(B * w) - logsig(-B * u_l) for w, u_l in zip(U_W, U_L)]),
    # TRL apo_zero (D'Oosterlinck et al. 2024, Eq. 7): 1 − σ(βu_w) + σ(βu_l)
    "apo_zero": ({}, [1 - sig(B * w) + sig(B * u_l) for w, u_l in zip(U_W, U_L)]),
    # TRL apo_down (Eq. 8): σ(βu_w) + 1 − σ(β(u_w − u_l))
    "apo_down": ({}, [sig(B * w) + 1 - sig(B * (w - u_l)) for w, u_l in zip(U_W, U_L)]),
    # TRL aot / aot_unpaired (Melnyk et al. 2024): smoothed logistic loss of the sorted differences
    "aot": ({"label_smoothing": 0.1}, [-0.9 * logsig(B * x) - 0.1 * logsig(-B * x) for x in aot_deltas()]),
    "aot_unpaired": ({}, [-logsig(B * x) for x in aot_unpaired_deltas()]),
    # Meng et al. 2024 (SimPO): −log σ(β·(c/|y_w| − r/|y_l|) − γ)
    "simpo": ({"beta": 2.0, "gamma": 0.5}, [-logsig(2.0 * (c / ct - r / rt) - 0.5) for c, r, _, _, ct, rt in PAIRS]),
    # Xu et al. 2024 (CPO): −(1−ε) log σ(β(c − r)) − ε log σ(−β(c − r)) + α·(−c/|y_w|)
    "cpo": (
        {"label_smoothing": 0.1, "cpo_alpha": 0.5},
        [-0.9 * logsig(B * (c - r)) - 0.1 * logsig(-B * (c - r)) + 0.5 * (-c / ct) for c, r, _, _, ct, _ in PAIRS],
    ),
    "orpo": ({"beta": 0.25}, orpo_expected(0.25)),
    # TRL sft: the batch's mean NLL per chosen token, the same for every pair
    "sft": ({}, [-sum(C) / sum(CT)] * 3),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_loss_value(name):
    params, expected = EXPECTED[name]
    assert_values(dpo_plugin.losses()[name](make_logps(), **params).losses, expected)


def test_the_aot_example_is_not_already_sorted():
    """Otherwise sorting would be a no-op and the AOT values would not test it."""
    assert aot_deltas() != [(c - r) - (rc - rr) for c, r, rc, rr, _, _ in PAIRS]
    assert aot_unpaired_deltas() != D


def test_every_builtin_loss_has_a_value_test():
    builtin = {n for n, s in dpo_plugin.losses().items() if s.plugin.startswith("dpo_plugin.")}
    tested = set(EXPECTED) | set(F_DIVERGENCE_LOSSES)
    assert builtin - tested == {"beta_dpo"}  # stateful and random: tested below
    assert len(builtin) == 24


def test_token_counts_of_zero_count_as_one_like_trl():
    """TRL divides by ``completion_mask.sum(dim=1).clamp(min=1.0)``."""
    logps = make_logps(chosen_tokens=(0, 4, 10))
    ipo = dpo_plugin.losses()["ipo"](logps).losses
    assert ipo[0].item() == pytest.approx((U_W[0] / 1 - U_L[0] / RT[0] - 1 / (2 * B)) ** 2, rel=1e-12)
    simpo = dpo_plugin.losses()["simpo"](logps).losses
    assert simpo[0].item() == pytest.approx(-logsig(2.0 * (C[0] / 1 - R[0] / RT[0]) - 0.5), rel=1e-12)


def test_discopop_is_finite_where_trls_product_overflows():
    """At z = βΔ = −100, e^{−z}·σ(z/τ) = e^{100}·σ(−2000) ≈ e^{−1900}: the loss is −log σ(−100) ≈ 100."""
    logps = make_logps(chosen=(-1005.5, -6.0, -12.0), rejected=(-7.0, -3.0, -11.0))
    z = B * ((-1005.5 - RC[0]) - U_L[0])
    out = dpo_plugin.losses()["discopop"](logps).losses
    expected = -logsig(z) * (1 - sig(z / 0.05)) + math.exp(-z + logsig(z / 0.05))
    assert out[0].item() == pytest.approx(expected, rel=1e-12) and math.isfinite(expected)


def test_sft_uses_the_plain_sums_with_ld_alpha():
    """TRL's sft averages the per-token log-probs, so LD-DPO's ``ld_alpha`` weighting does not reach it."""
    out = dpo_plugin.losses()["sft"](make_logps(chosen=(-1.0, -1.0, -1.0), chosen_unweighted=C, rejected_unweighted=R))
    assert_values(out.losses, [-sum(C) / sum(CT)] * 3)
    assert_values(out.chosen_rewards, [c / ct for c, ct in zip(C, CT)])


# --- rewards and metrics ------------------------------------------------------------------------------------------

REFERENCE_BASED = [
    n for n, s in dpo_plugin.losses().items() if s.plugin.startswith("dpo_plugin.") and s.needs_reference
]


@pytest.mark.parametrize("name", REFERENCE_BASED)
def test_rewards_are_beta_times_the_log_ratios(name):
    """TRL: ``rewards/chosen`` = β·(c − rc), ``rewards/rejected`` = β·(r − rr), with the run's β
    (not β-DPO's batch β)."""
    params = {"rho": 0.0} if name == "beta_dpo" else {}
    out = dpo_plugin.losses()[name](make_logps(), beta=0.3, **params)
    assert_values(out.chosen_rewards, [0.3 * w for w in U_W])
    assert_values(out.rejected_rewards, [0.3 * u_l for u_l in U_L])


@pytest.mark.parametrize(
    "name, params, chosen, rejected",
    [
        ("simpo", {"beta": 1.5}, [1.5 * c / ct for c, ct in zip(C, CT)], [1.5 * r / rt for r, rt in zip(R, RT)]),
        ("orpo", {"beta": 0.3}, [0.3 * c / ct for c, ct in zip(C, CT)], [0.3 * r / rt for r, rt in zip(R, RT)]),
        ("cpo", {"beta": 0.3}, [0.3 * c for c in C], [0.3 * r for r in R]),
        ("sft", {}, [c / ct for c, ct in zip(C, CT)], [r / rt for r, rt in zip(R, RT)]),
    ],
)
def test_reference_free_rewards(name, params, chosen, rejected):
    out = dpo_plugin.losses()[name](make_logps(ref_chosen=None, ref_rejected=None), **params)
    assert_values(out.chosen_rewards, chosen)
    assert_values(out.rejected_rewards, rejected)


def test_cpo_and_orpo_metrics():
    nll = sum(-c / ct for c, ct in zip(C, CT)) / 3
    cpo = dpo_plugin.losses()["cpo"](make_logps())
    assert cpo.metrics.keys() == {"nll"} and float(cpo.metrics["nll"]) == pytest.approx(nll, rel=1e-12)
    orpo = dpo_plugin.losses()["orpo"](make_logps())
    log_odds = [
        (c / ct - math.log(1 - math.exp(c / ct))) - (r / rt - math.log(1 - math.exp(r / rt)))
        for c, r, _, _, ct, rt in PAIRS
    ]
    assert orpo.metrics.keys() == {"nll", "log_odds_ratio", "log_odds"}
    assert float(orpo.metrics["nll"]) == pytest.approx(nll, rel=1e-12)
    assert float(orpo.metrics["log_odds"]) == pytest.approx(sum(log_odds) / 3, rel=1e-12)
    assert float(orpo.metrics["log_odds_ratio"]) == pytest.approx(sum(logsig(x) for x in log_odds) / 3, rel=1e-12)


# --- β-DPO (Wu et al. 2024, arXiv:2407.08639): deterministic parts --------------------------------------------------
# M_i = Δ_i; M₀ and σ are momentum averages (m = 0.9, both starting at 0) of the training batches' mean and
# (unbiased) std of M; β_batch = max(β·(1 + α·(mean over kept pairs of M − M₀)), 1e-3). The statistics are
# kept in float32, hence rtol 1e-6.

D2 = [0.4, 3.0, -2.0, 5.0]


def batch_with_deltas(deltas) -> PairLogps:
    """Pairs whose log-ratio difference is Δ_i (u_w = Δ_i, u_l = 0), 5 tokens each."""
    n = len(deltas)
    return make_logps(
        chosen=[-10.0 + d for d in deltas],
        rejected=[-8.0] * n,
        ref_chosen=[-10.0] * n,
        ref_rejected=[-8.0] * n,
        chosen_tokens=[5] * n,
        rejected_tokens=[5] * n,
    )


def test_beta_dpo_without_filtering_follows_the_moving_averages():
    loss = dpo_plugin.losses()["beta_dpo"].create(beta=0.1, alpha=0.6, rho=0.0, momentum=0.9)
    state = loss.fn
    mean1 = 0.9 * 0.0 + 0.1 * statistics.fmean(D)
    std1 = 0.9 * 0.0 + 0.1 * statistics.stdev(D)
    beta1 = 0.1 * (1 + 0.6 * (statistics.fmean(D) - mean1))
    first = loss(make_logps())
    assert (state.gap_mean, state.gap_std) == (pytest.approx(mean1, rel=1e-6), pytest.approx(std1, rel=1e-6))
    assert first.metrics == {"beta": pytest.approx(beta1, rel=1e-6), "kept_fraction": 1.0}
    assert_values(first.losses, [-logsig(beta1 * d) for d in D], rtol=1e-6)

    mean2 = 0.9 * mean1 + 0.1 * statistics.fmean(D2)
    std2 = 0.9 * std1 + 0.1 * statistics.stdev(D2)
    beta2 = 0.1 * (1 + 0.6 * (statistics.fmean(D2) - mean2))
    second = loss(batch_with_deltas(D2))
    assert (state.gap_mean, state.gap_std) == (pytest.approx(mean2, rel=1e-6), pytest.approx(std2, rel=1e-6))
    assert second.metrics["beta"] == pytest.approx(beta2, rel=1e-6)
    assert_values(second.losses, [-logsig(beta2 * d) for d in D2], rtol=1e-6)


def test_beta_dpo_batch_beta_is_floored():
    """A batch far below the running mean would give a negative β; it is floored at 10⁻³."""
    loss = dpo_plugin.losses()["beta_dpo"].create(rho=0.0)
    deltas = [-30.0, -40.0]
    assert 0.1 * (1 + 0.6 * (-35.0 - 0.1 * -35.0)) < 0
    out = loss(batch_with_deltas(deltas))
    assert out.metrics["beta"] == 1e-3
    assert_values(out.losses, [-logsig(1e-3 * d) for d in deltas], rtol=1e-6)


@pytest.mark.parametrize("n, rho, kept", [(10, 0.2, 8), (5, 0.5, 2), (2, 0.6, 1)])
def test_beta_dpo_filtering_keeps_a_fraction_and_rescales(n, rho, kept):
    deltas = [0.5 * i - 1.0 for i in range(n)]
    loss = dpo_plugin.losses()["beta_dpo"].create(beta=0.1, alpha=0.6, rho=rho)
    torch.manual_seed(0)
    out = loss(batch_with_deltas(deltas))
    kept_ids = [i for i, value in enumerate(out.losses.tolist()) if value != 0]  # −log σ(x) > 0 for every kept pair
    assert len(kept_ids) == kept and out.metrics["kept_fraction"] == pytest.approx(kept / n)
    gap_mean = 0.1 * statistics.fmean(deltas)
    beta = 0.1 * (1 + 0.6 * (statistics.fmean(deltas[i] for i in kept_ids) - gap_mean))
    assert out.metrics["beta"] == pytest.approx(beta, rel=1e-6)
    # kept pairs are scaled by n/kept, so the batch mean is the mean over the kept pairs
    expected = [-logsig(beta * d) * n / kept if i in kept_ids else 0.0 for i, d in enumerate(deltas)]
    assert_values(out.losses, expected, rtol=1e-6)
    assert out.losses.mean().item() == pytest.approx(
        statistics.fmean(-logsig(beta * deltas[i]) for i in kept_ids), rel=1e-6
    )


def test_beta_dpo_does_not_filter_a_single_pair():
    out = dpo_plugin.losses()["beta_dpo"].create(rho=0.5)(batch_with_deltas([1.0]))
    assert out.metrics["kept_fraction"] == 1.0 and out.losses.item() > 0


def test_beta_dpo_filtering_prefers_pairs_near_the_running_mean():
    """Weights exp(−½((M_i − M₀)/σ)²): once M₀ and σ have settled, a far outlier is (almost) never kept."""
    deltas = [1.0, 1.5, 2.0, 2.5, 3.0, 1.2, 1.8, 2.2, 2.8, 30.0]
    loss = dpo_plugin.losses()["beta_dpo"].create(rho=0.2)
    torch.manual_seed(0)
    warm_up = batch_with_deltas(deltas[:-1] + [2.0])
    for _ in range(100):
        loss(warm_up)
    settled = (loss.fn.gap_mean, loss.fn.gap_std)  # ≈ (2.0, 0.66): the outlier sits ~40σ away
    kept_outlier = 0
    for _ in range(20):
        loss.fn.gap_mean, loss.fn.gap_std = settled  # each draw from the same settled statistics
        kept_outlier += loss(batch_with_deltas(deltas)).losses[-1].item() != 0
    assert kept_outlier == 0  # uniform sampling would keep it in 8 of 10 draws


def test_beta_dpo_under_no_grad_keeps_every_pair_and_leaves_the_statistics():
    loss = dpo_plugin.losses()["beta_dpo"].create(beta=0.1, alpha=0.6, rho=0.5)
    loss(make_logps())  # one training step: M₀ = 0.1·mean(Δ)
    state = (loss.fn.gap_mean, loss.fn.gap_std)
    with torch.no_grad():
        out = loss(batch_with_deltas(D2))
    assert (loss.fn.gap_mean, loss.fn.gap_std) == state
    beta = 0.1 * (1 + 0.6 * (statistics.fmean(D2) - state[0]))
    assert out.metrics == {"beta": pytest.approx(beta, rel=1e-6), "kept_fraction": 1.0}
    assert_values(out.losses, [-logsig(beta * d) for d in D2], rtol=1e-6)


def test_beta_dpo_instances_do_not_share_state():
    spec = dpo_plugin.losses()["beta_dpo"]
    first, second = spec.create(rho=0.0), spec.create(rho=0.0)
    first(make_logps())
    assert first.fn is not second.fn and second.fn.gap_mean == 0.0 and first.fn.gap_mean != 0.0
