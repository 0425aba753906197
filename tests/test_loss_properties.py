"""Properties every registered loss must have, and the parameter and output contracts."""

from __future__ import annotations

import pytest
import torch

import dpo_plugin
from dpo_plugin import LossOutput, PairLogps
from dpo_plugin.errors import ConfigError, PluginContractError

NAMES = list(dpo_plugin.losses())


def pairs(chosen, rejected, ref_chosen=None, ref_rejected=None, requires_grad=False):
    def t(values):
        return None if values is None else torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)

    n = len(chosen)
    return PairLogps(t(chosen), t(rejected), t(ref_chosen), t(ref_rejected), torch.full((n,), 8), torch.full((n,), 6))


@pytest.mark.parametrize("name", NAMES)
def test_per_pair_shape_and_detached_rewards(name):
    out = dpo_plugin.losses()[name](pairs([-5.0, -6.0, -2.0], [-7.0, -3.0, -9.0], [-5.5, -6.0, -2.0], [-6.0, -4.0, -8.0], True))
    assert isinstance(out, LossOutput) and out.losses.shape == (3,)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "chosen, rejected, ref_chosen, ref_rejected",
    [
        ([-1e4, -1e-3], [-1e-3, -1e4], [-1e-3, -1e4], [-1e4, -1e-3]),  # log-ratios of ±1e4
        ([-1e4, -1e4], [-1e4, -1e4], [-1e4, -1e4], [-1e4, -1e4]),
        ([-1e-3, -1e-3], [-1e-3, -1e-3], [-1e-3, -1e-3], [-1e-3, -1e-3]),
    ],
)
def test_finite_values_and_gradients_at_extremes(name, chosen, rejected, ref_chosen, ref_rejected):
    logps = pairs(chosen, rejected, ref_chosen, ref_rejected, requires_grad=True)
    out = dpo_plugin.losses()[name](logps)
    assert torch.isfinite(out.losses).all()
    out.losses.sum().backward()
    for grad in (logps.chosen.grad, logps.rejected.grad):
        assert grad is None or torch.isfinite(grad).all()  # sft does not use the rejected log-probs


@pytest.mark.parametrize("name", NAMES)
def test_gradient_direction_at_the_neutral_point(name):
    """At policy == reference, gradient descent raises the chosen log-prob and lowers the rejected, except where the loss says otherwise."""
    logps = pairs([-6.0, -6.0], [-6.0, -6.0], [-6.0, -6.0], [-6.0, -6.0], requires_grad=True)
    params = {"beta_dpo": {"rho": 0.0}}.get(name, {})  # β-DPO would drop one of two pairs at random
    dpo_plugin.losses()[name](logps, **params).losses.sum().backward()
    d_chosen, d_rejected = logps.chosen.grad, logps.rejected.grad
    if name == "sft":  # SFT raises the chosen likelihood and ignores the rejected
        assert (d_chosen < 0).all() and d_rejected is None
    elif name == "apo_down":  # σ(βu_w) + 1 − σ(β(u_w − u_l)): flat in u_w at 0, lowers the rejected
        assert (d_chosen == 0).all() and (d_rejected > 0).all()
    elif name == "discopop":
        # non-convex at Δ = 0 (Lu et al. 2024): dℓ/dz = −½·½ − log 2/(4τ) − ½ + 1/(4τ) with τ = 0.05, z = βΔ
        slope = -0.25 - 0.6931471805599453 * 5 - 0.5 + 5
        torch.testing.assert_close(d_chosen, torch.full((2,), 0.1 * slope, dtype=torch.float64))
    else:
        assert (d_chosen < 0).all() and (d_rejected > 0).all(), (d_chosen, d_rejected)


@pytest.mark.parametrize("name", [n for n, s in dpo_plugin.losses().items() if not s.needs_reference])
def test_reference_free_losses_ignore_the_reference(name):
    base = dpo_plugin.losses()[name](pairs([-5.0, -9.0], [-7.0, -3.0]))
    other = dpo_plugin.losses()[name](pairs([-5.0, -9.0], [-7.0, -3.0], [-1.0, -2.0], [-30.0, -40.0]))
    torch.testing.assert_close(base.losses, other.losses)


def test_batch_coupled_exactly_for_losses_that_mix_across_the_batch():
    coupled = {n for n, s in dpo_plugin.losses().items() if s.batch_coupled}
    assert coupled == {"aot", "aot_unpaired", "beta_dpo"}
    logps = pairs([-5.0, -9.0, -1.0], [-7.0, -3.0, -2.0], [-5.0, -8.0, -1.5], [-6.0, -4.0, -2.0])
    flipped = pairs([-9.0, -5.0, -1.0], [-3.0, -7.0, -2.0], [-8.0, -5.0, -1.5], [-4.0, -6.0, -2.0])
    for name in set(dpo_plugin.losses()) - coupled - {"sft"}:
        a = dpo_plugin.losses()[name](logps).losses
        b = dpo_plugin.losses()[name](flipped).losses
        torch.testing.assert_close(a[[1, 0, 2]], b, msg=name)  # per-pair: permuting pairs permutes losses


def test_parameter_precedence_and_validation():
    simpo = dpo_plugin.losses()["simpo"]
    assert simpo.resolve_params() == {"beta": 2.0, "gamma": 0.5}
    assert simpo.resolve_params(config={"beta": 0.5}) == {"beta": 0.5, "gamma": 0.5}
    assert simpo.resolve_params({"beta": 3}, {"beta": 0.5}) == {"beta": 3.0, "gamma": 0.5}
    with pytest.raises(ConfigError, match="beta must be > 0"):
        simpo.resolve_params({"beta": 0})
    with pytest.raises(ConfigError, match=r"label_smoothing must lie in \[0, 0.5\)"):
        dpo_plugin.losses()["cdpo"].resolve_params({"label_smoothing": 0.5})
    with pytest.raises(ConfigError, match="does not take \\['tau'\\]; it takes: beta=2.0, gamma=0.5"):
        simpo.resolve_params({"tau": 1})
    with pytest.raises(ConfigError, match="must be a float"):
        simpo.resolve_params({"gamma": "big"})


def _plugin_with(fn):
    class Plugin:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_losses(register):
            register("broken", fn)

    return Plugin


@pytest.mark.parametrize(
    "body, message",
    [
        (lambda logps: LossOutput(logps.chosen.sum(), logps.chosen, logps.rejected), "shape ()"),
        (lambda logps: LossOutput([1.0, 2.0], logps.chosen, logps.rejected), "type list"),
        (lambda logps: logps.chosen, "returned Tensor"),
        (lambda logps: LossOutput(logps.chosen * float("nan"), logps.chosen, logps.rejected), "non-finite"),
    ],
)
def test_contract_errors_name_the_loss_and_plugin(body, message, register_plugin):
    def broken(logps, *, beta: float = 0.1):
        return body(logps)

    register_plugin(_plugin_with(broken), "broken-plugin")
    with pytest.raises(PluginContractError) as info:
        dpo_plugin.losses()["broken"](pairs([-1.0, -2.0], [-3.0, -4.0], [-1.0, -2.0], [-3.0, -4.0]))
    assert "'broken'" in str(info.value) and "'broken-plugin'" in str(info.value) and message in str(info.value)
