"""Properties every registered loss must have, and the parameter and output contracts of `LossSpec`."""

from __future__ import annotations

import math

import pytest
import torch

import dpo_plugin
from dpo_plugin import LossOutput, PairLogps
from dpo_plugin.errors import ConfigError, PluginContractError

NAMES = list(dpo_plugin.losses())
# β-DPO drops a random fraction ρ of the pairs while training: without it its per-pair values are deterministic
DETERMINISTIC = {"beta_dpo": {"rho": 0.0}}


def pairs(
    chosen, rejected, ref_chosen=None, ref_rejected=None, *, requires_grad=False, dtype=torch.float64, tokens=(8, 6)
):
    def t(values):
        return None if values is None else torch.tensor(values, dtype=dtype, requires_grad=requires_grad)

    n = len(chosen)
    return PairLogps(
        t(chosen), t(rejected), t(ref_chosen), t(ref_rejected), torch.full((n,), tokens[0]), torch.full((n,), tokens[1])
    )


def call(name, logps, **params):
    return dpo_plugin.losses()[name](logps, **{**DETERMINISTIC.get(name, {}), **params})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [1, 3])
def test_per_pair_shape_and_detached_rewards(name, size):
    values = [(-5.0, -7.0, -5.5, -6.0), (-6.0, -3.0, -6.0, -4.0), (-2.0, -9.0, -2.0, -8.0)][:size]
    logps = pairs(*map(list, zip(*values)), requires_grad=True)
    out = dpo_plugin.losses()[name](logps)
    assert isinstance(out, LossOutput)
    assert out.losses.shape == out.chosen_rewards.shape == out.rejected_rewards.shape == (size,)
    assert out.losses.requires_grad
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


EXTREMES = {
    "logratios ±1e4": ([-1e4, -1e-3], [-1e-3, -1e4], [-1e-3, -1e4], [-1e4, -1e-3]),
    "all -1e4": ([-1e4, -1e4], [-1e4, -1e4], [-1e4, -1e4], [-1e4, -1e4]),
    "all -1e-3": ([-1e-3, -1e-3], [-1e-3, -1e-3], [-1e-3, -1e-3], [-1e-3, -1e-3]),
    "policy -1e4 vs -1e-3": ([-1e4, -1e-3], [-1e-3, -1e4], [-5.0, -5.0], [-5.0, -5.0]),
}


def assert_finite_with_finite_gradients(out: LossOutput, logps: PairLogps) -> None:
    assert torch.isfinite(out.losses).all(), out.losses
    out.losses.sum().backward()
    for grad in (logps.chosen.grad, logps.rejected.grad):
        assert grad is None or torch.isfinite(grad).all(), grad  # sft does not use the rejected log-probs


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", list(EXTREMES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_finite_values_and_gradients_at_extremes(name, case, dtype):
    logps = pairs(*EXTREMES[case], requires_grad=True, dtype=dtype)
    assert_finite_with_finite_gradients(dpo_plugin.losses()[name](logps), logps)


@pytest.mark.parametrize("name", [n for n, s in dpo_plugin.losses().items() if s.supports_f_divergence])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_js_divergence_stays_finite_at_extremes(name, dtype):
    """The JS score log 2 + log σ(u) is bounded above; forward KL (1 − e^{−u}) and α-divergence are not, in TRL too."""
    logps = pairs(*EXTREMES["logratios ±1e4"], requires_grad=True, dtype=dtype)
    assert_finite_with_finite_gradients(dpo_plugin.losses()[name](logps, f_divergence_type="js_divergence"), logps)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_direction_at_the_neutral_point(name):
    """At policy == reference, a gradient step raises the chosen log-prob and lowers the rejected (dℓ/dc < 0 < dℓ/dr),
    except where the loss says otherwise."""
    logps = pairs([-6.0, -6.0], [-6.0, -6.0], [-6.0, -6.0], [-6.0, -6.0], requires_grad=True)
    call(name, logps).losses.sum().backward()
    d_chosen, d_rejected = logps.chosen.grad, logps.rejected.grad
    if name == "sft":  # SFT raises the chosen likelihood and ignores the rejected
        assert (d_chosen < 0).all() and d_rejected is None
    elif name == "apo_down":  # σ(βu_w) + 1 − σ(β(u_w − u_l)): flat in u_w at 0 (β/4 − β/4), lowers the rejected
        assert (d_chosen == 0).all() and (d_rejected > 0).all()
    elif name == "discopop":
        # DiscoPOP is non-convex at Δ = 0 (Lu et al. 2024): with z = βΔ, τ = 0.05, w = σ(z/τ),
        # dℓ/dz = −σ(−z)(1 − w) − log σ(z)·(−w(1 − w)/τ) − e^{−z}w + e^{−z}w(1 − w)/τ = −¼ − log 2/(4τ) − ½ + 1/(4τ) > 0
        slope = -0.25 - math.log(2) / (4 * 0.05) - 0.5 + 1 / (4 * 0.05)
        torch.testing.assert_close(d_chosen, torch.full((2,), 0.1 * slope, dtype=torch.float64))
        torch.testing.assert_close(d_rejected, -d_chosen)
    else:
        assert (d_chosen < 0).all() and (d_rejected > 0).all(), (d_chosen, d_rejected)


REFERENCE_FREE = [n for n, s in dpo_plugin.losses().items() if not s.needs_reference]


def test_the_reference_free_builtins():
    assert {"simpo", "cpo", "orpo", "sft"} <= set(REFERENCE_FREE)


@pytest.mark.parametrize("name", REFERENCE_FREE)
def test_reference_free_losses_ignore_the_reference(name):
    without = dpo_plugin.losses()[name](pairs([-5.0, -9.0], [-7.0, -3.0]))
    for ref_chosen, ref_rejected in [([-1.0, -2.0], [-30.0, -40.0]), ([-50.0, -0.5], [-0.1, -8.0])]:
        other = dpo_plugin.losses()[name](pairs([-5.0, -9.0], [-7.0, -3.0], ref_chosen, ref_rejected))
        torch.testing.assert_close(without.losses, other.losses, rtol=0, atol=0)
        torch.testing.assert_close(without.chosen_rewards, other.chosen_rewards, rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n, s in dpo_plugin.losses().items() if s.needs_reference])
def test_reference_losses_use_the_reference(name):
    """The converse: a loss that declares needs_reference changes with the reference (and fails clearly without one)."""
    base = call(name, pairs([-5.0, -9.0], [-7.0, -3.0], [-5.5, -8.0], [-6.0, -4.0])).losses
    moved = call(name, pairs([-5.0, -9.0], [-7.0, -3.0], [-4.0, -10.0], [-6.5, -3.0])).losses
    assert not torch.equal(base, moved)
    with pytest.raises(ValueError, match="needs reference log-probabilities"):
        call(name, pairs([-5.0, -9.0], [-7.0, -3.0]))


BATCH = ([-5.0, -9.0, -1.0], [-7.0, -3.0, -2.0], [-5.0, -8.0, -1.5], [-6.0, -4.0, -2.0])


def with_last_pair_changed(values):
    chosen, rejected, ref_chosen, ref_rejected = (list(v) for v in values)
    chosen[2], rejected[2], ref_chosen[2], ref_rejected[2] = -20.0, -1.0, -3.0, -9.0
    return chosen, rejected, ref_chosen, ref_rejected


def test_batch_coupled_exactly_for_losses_that_mix_across_the_batch():
    """batch_coupled (no per-pair WPO weights) ⇔ a pair's loss depends on the other pairs of the batch.

    SFT is the one uncoupled exception: its per-pair value is the batch's mean NLL per token, the same
    for every pair, so per-pair weights stay aligned with it (TRL weights it that way too).
    """
    coupled = {n for n, s in dpo_plugin.losses().items() if s.batch_coupled}
    assert coupled == {"aot", "aot_unpaired", "beta_dpo"}
    for name in NAMES:
        first_two = call(name, pairs(*BATCH)).losses[:2]
        changed = call(name, pairs(*with_last_pair_changed(BATCH))).losses[:2]
        depends_on_other_pairs = not torch.allclose(first_two, changed, rtol=1e-12, atol=0)
        assert depends_on_other_pairs == (name in coupled or name == "sft"), name


@pytest.mark.parametrize("name", sorted(set(NAMES) - {"aot", "aot_unpaired", "beta_dpo"}))
def test_uncoupled_losses_permute_with_the_pairs(name):
    order = [2, 0, 1]
    permuted = [[v[i] for i in order] for v in BATCH]
    torch.testing.assert_close(call(name, pairs(*BATCH)).losses[order], call(name, pairs(*permuted)).losses)


# --- parameters ---------------------------------------------------------------------------------------------------


def test_parameter_precedence():
    """loss_params[name] > a config field the user set explicitly > the loss's own default."""
    simpo = dpo_plugin.losses()["simpo"]
    assert simpo.resolve_params() == {"beta": 2.0, "gamma": 0.5}
    assert simpo.resolve_params(config={"beta": 0.5}) == {"beta": 0.5, "gamma": 0.5}
    assert simpo.resolve_params({"gamma": 0.1}, {"beta": 0.5, "gamma": 0.3}) == {"beta": 0.5, "gamma": 0.1}
    assert simpo.resolve_params({"beta": 3}, {"beta": 0.5}) == {"beta": 3.0, "gamma": 0.5}
    assert isinstance(simpo.resolve_params({"beta": 3})["beta"], float)  # ints are accepted for floats
    # config fields the loss does not take are not its business (the trainer reports unused explicit fields)
    assert dpo_plugin.losses()["sigmoid"].resolve_params(config={"label_smoothing": 0.2, "beta": 0.2})["beta"] == 0.2


@pytest.mark.parametrize("beta", [0, 0.0, -0.1])
def test_beta_must_be_positive(beta):
    with pytest.raises(ConfigError, match=r"beta=.* for loss 'simpo': beta must be > 0"):
        dpo_plugin.losses()["simpo"].resolve_params({"beta": beta})
    with pytest.raises(ConfigError, match="beta must be > 0"):
        dpo_plugin.losses()["sigmoid"].resolve_params(config={"beta": beta})


@pytest.mark.parametrize("value, ok", [(0.0, True), (0.49, True), (0.5, False), (0.7, False), (-0.01, False)])
@pytest.mark.parametrize("name", ["cdpo", "robust", "aot", "cpo"])
def test_label_smoothing_range(name, value, ok):
    spec = dpo_plugin.losses()[name]
    if ok:
        assert spec.resolve_params({"label_smoothing": value})["label_smoothing"] == value
    else:
        with pytest.raises(ConfigError, match=r"label_smoothing must lie in \[0, 0.5\)"):
            spec.resolve_params({"label_smoothing": value})


def test_unknown_parameters_list_the_accepted_ones():
    message = (
        r"'simpo' \(plugin 'dpo_plugin.loss_variants.reference_free'\) does not take \['tau'\]; "
        r"it takes: beta=2.0, gamma=0.5"
    )
    with pytest.raises(ConfigError, match=message):
        dpo_plugin.losses()["simpo"].resolve_params({"tau": 1})
    with pytest.raises(ConfigError, match="does not take .*; it takes: no parameters"):
        dpo_plugin.losses()["sft"].resolve_params({"beta": 0.1})


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("simpo", {"gamma": "big"}, "'gamma' of loss 'simpo' must be a float, got 'big' \\(str\\)"),
        ("simpo", {"beta": True}, "'beta' of loss 'simpo' must be a float, got True \\(bool\\)"),
        ("sigmoid", {"f_divergence_type": 1.0}, "'f_divergence_type' of loss 'sigmoid' must be a str"),
        ("beta_dpo", {"rho": None}, "'rho' of loss 'beta_dpo' must be a float"),
    ],
)
def test_wrong_types_raise(name, params, message):
    with pytest.raises(ConfigError, match=message):
        dpo_plugin.losses()[name].resolve_params(params)


# --- the output contract, through spec(logps, ...) and BoundLoss ----------------------------------------------------


def _plugin_registering(name, fn, **metadata):
    class Plugin:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_losses(register):
            register(name, fn, **metadata)

    return Plugin


def test_a_required_parameter_must_be_set(register_plugin):
    def needs_margin(logps, *, margin: float):
        """A loss with a required parameter."""
        return LossOutput(margin - logps.chosen, logps.chosen, logps.rejected)

    register_plugin(_plugin_registering("needs_margin", needs_margin), "margin-plugin")
    spec = dpo_plugin.losses()["needs_margin"]
    with pytest.raises(
        ConfigError, match=r"needs parameter 'margin': set it under loss_params: \{needs_margin: \{margin"
    ):
        spec.resolve_params()
    assert spec.resolve_params({"margin": "any"}) == {"margin": "any"}  # without a default there is no type to check


LOGPS = pairs([-1.0, -2.0], [-3.0, -4.0], [-1.0, -2.0], [-3.0, -4.0])


@pytest.mark.parametrize(
    "body, message",
    [
        (
            lambda logps: LossOutput(logps.chosen.sum(), logps.chosen, logps.rejected),
            "losses of shape (); expected per-pair values of shape (2,)",
        ),
        (lambda logps: LossOutput(logps.chosen, logps.chosen[:1], logps.rejected), "chosen_rewards of shape (1,)"),
        (lambda logps: LossOutput([1.0, 2.0], logps.chosen, logps.rejected), "losses of type list; expected a tensor"),
        (lambda logps: LossOutput(logps.chosen, logps.chosen, 0.0), "rejected_rewards of type float"),
        (lambda logps: logps.chosen, "returned Tensor; a loss must return a LossOutput"),
        (lambda logps: (logps.chosen, logps.chosen, logps.rejected), "returned tuple"),
        (lambda logps: LossOutput(logps.chosen * float("nan"), logps.chosen, logps.rejected), "non-finite losses"),
        (lambda logps: LossOutput(logps.chosen / 0.0, logps.chosen, logps.rejected), "non-finite losses [-inf, -inf]"),
        (
            lambda logps: LossOutput(logps.chosen, logps.chosen * float("nan"), logps.rejected),
            "non-finite chosen_rewards",
        ),
    ],
)
@pytest.mark.parametrize("via", ["spec", "bound"])
def test_contract_errors_name_the_loss_and_plugin(body, message, via, register_plugin):
    def broken(logps, *, beta: float = 0.1):
        return body(logps)

    register_plugin(_plugin_registering("broken", broken), "broken-plugin")
    spec = dpo_plugin.losses()["broken"]
    with pytest.raises(PluginContractError) as info:
        spec(LOGPS) if via == "spec" else spec.create(beta=0.2)(LOGPS)
    assert "Loss 'broken' (plugin 'broken-plugin')" in str(info.value)
    assert message in str(info.value)


def test_factory_losses_are_checked_too(register_plugin):
    class Broken:
        def __init__(self, *, beta: float = 0.1):
            self.beta = beta

        def __call__(self, logps):
            return LossOutput(logps.chosen.mean(), logps.chosen, logps.rejected)

    register_plugin(_plugin_registering("broken_factory", Broken, factory=True), "factory-plugin")
    with pytest.raises(PluginContractError, match="Loss 'broken_factory' \\(plugin 'factory-plugin'\\).*shape \\(\\)"):
        dpo_plugin.losses()["broken_factory"].create(beta=0.3)(LOGPS)


def test_a_well_behaved_plugin_loss_passes_the_checks(register_plugin):
    def fine(logps, *, beta: float = 0.1):
        """−log σ(β·(c − r))."""
        return LossOutput(
            -torch.nn.functional.logsigmoid(beta * (logps.chosen - logps.rejected)), logps.chosen, logps.rejected
        )

    register_plugin(_plugin_registering("fine", fine, needs_reference=False), "fine-plugin")
    out = dpo_plugin.losses()["fine"](LOGPS, beta=0.5)
    torch.testing.assert_close(out.losses, torch.tensor([-math.log(1 / (1 + math.exp(-1.0)))] * 2, dtype=torch.float64))


def test_calling_a_spec_directly_checks_parameters_as_the_config_does():
    logps = PairLogps(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]))
    with pytest.raises(ConfigError, match="beta=0"):
        dpo_plugin.losses()["sigmoid"](logps, beta=0)
    with pytest.raises(ConfigError, match="label_smoothing=0.7"):
        dpo_plugin.losses()["cdpo"](logps, label_smoothing=0.7)
    with pytest.raises(ConfigError, match=r"does not take \['tau'\]; it takes: beta=.*gamma="):
        dpo_plugin.losses()["simpo"](logps, tau=1)
    # the defaults are filled in: sigmoid's β = 0.1 and the log-ratios are 0.5 and −0.5, so −log σ(0.1·1)
    expected = -math.log(1 / (1 + math.exp(-0.1)))
    assert dpo_plugin.losses()["sigmoid"](logps).losses.item() == pytest.approx(expected, rel=1e-6)
