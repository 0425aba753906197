"""The typed registries: a read-only mapping name → spec, and what `Spec`,
`LossSpec` and `CheckSpec` read and refuse."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, MutableMapping

import pytest
import torch

from dpo_plugin import LossOutput, PairLogps
from dpo_plugin.errors import DuplicateNameError, PluginContractError, UnknownNameError
from dpo_plugin.loss_spec import BoundLoss, LossSpec
from dpo_plugin.registry import CheckSpec, Registry, Spec


def dpo(logps, *, beta: float = 0.1, f_divergence_type: str = "reverse_kl"):
    """A DPO-like loss.

    Second paragraph, not part of the description.
    """
    chosen, rejected = logps.logratios()
    return LossOutput(-torch.nn.functional.logsigmoid(beta * (chosen - rejected)), beta * chosen, beta * rejected)


def undocumented(logps, margin, *args, scale: float = 1.0, **kwargs):
    return LossOutput(scale * (margin - logps.chosen), logps.chosen, logps.rejected)


class Counting:
    """A stateful loss: counts its calls."""

    def __init__(self, *, beta: float = 0.1, start: int = 0):
        self.beta, self.calls = beta, start

    def __call__(self, logps):
        self.calls += 1
        return LossOutput(self.calls * torch.ones_like(logps.chosen), logps.chosen, logps.rejected)


LOGPS = PairLogps(
    torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-1.5, -2.0]), torch.tensor([-2.0, -2.0])
)


@pytest.fixture
def registry():
    reg = Registry("loss", LossSpec)
    reg.registrar("first")("zeta", dpo)
    reg.registrar("first")("alpha", undocumented, needs_reference=False)
    reg.registrar("second")("mid", Counting, factory=True, batch_coupled=True)
    return reg


def test_a_read_only_mapping(registry):
    assert isinstance(registry, Mapping) and not isinstance(registry, MutableMapping)
    with pytest.raises(TypeError):
        registry["new"] = registry["zeta"]
    with pytest.raises(TypeError):
        del registry["zeta"]
    assert not hasattr(registry, "pop") and not hasattr(registry, "update")
    assert list(registry) == ["zeta", "alpha", "mid"]


def test_iteration_follows_registration_order(registry):
    assert list(registry) == ["zeta", "alpha", "mid"]  # not sorted
    assert [spec.name for spec in registry.values()] == ["zeta", "alpha", "mid"]
    assert [(name, spec.plugin) for name, spec in registry.items()] == [
        ("zeta", "first"),
        ("alpha", "first"),
        ("mid", "second"),
    ]


def test_contains_len_and_repr(registry):
    assert "zeta" in registry and "mid" in registry
    assert "Zeta" not in registry and "" not in registry and 3 not in registry and None not in registry
    assert len(registry) == 3 and len(Registry("judge", Spec)) == 0
    assert repr(registry) == "<Registry of 3 loss names: zeta, alpha, mid>"


def test_unknown_names(registry):
    with pytest.raises(UnknownNameError) as info:
        registry["alpah"]
    error = info.value
    assert str(error) == "Unknown loss 'alpah'. Did you mean 'alpha'? Registered loss names: alpha, mid, zeta."
    assert (error.kind, error.name, error.known, error.closest) == ("loss", "alpah", ["alpha", "mid", "zeta"], "alpha")
    assert isinstance(error, KeyError) and isinstance(error, ValueError)
    assert registry.get("alpah") is None and registry.get("alpah", 7) == 7
    with pytest.raises(UnknownNameError, match=r"Unknown loss 'qqqqq'\. Registered"):  # no close match, no hint
        registry["qqqqq"]
    with pytest.raises(UnknownNameError, match=r"Unknown loss \['zeta'\]"):  # unhashable: still a clear error
        registry[["zeta"]]
    with pytest.raises(UnknownNameError, match=r"Unknown judge 'x'\. Registered judge names: \(none registered\)\."):
        Registry("judge", Spec)["x"]


def test_duplicates_name_both_plugins_unless_overridden(registry):
    with pytest.raises(DuplicateNameError) as info:
        registry.registrar("third")("alpha", dpo)
    message = str(info.value)
    assert "Loss 'alpha' is registered by two plugins: 'first' and 'third'" in message
    assert "DPO_PLUGIN_BLOCK_PLUGINS=third" in message and "override=True" in message
    assert registry["alpha"].obj is undocumented  # the failed registration changed nothing
    registry.registrar("third")("alpha", dpo, override=True)
    assert registry["alpha"].obj is dpo and registry["alpha"].plugin == "third"
    assert list(registry) == ["zeta", "alpha", "mid"]  # the replacement keeps its place


@pytest.mark.parametrize("name", ["", None, 3])
def test_invalid_names(name):
    with pytest.raises(PluginContractError, match=f"Plugin 'p' registered a judge with invalid name {name!r}"):
        Registry("judge", Spec).registrar("p")(name, object())


# --- Spec ---------------------------------------------------------------------------------------------------------


def test_spec_build_rejects_unknown_metadata():
    with pytest.raises(PluginContractError) as info:
        Spec.build("lora", object(), "plug", {"needs_reference": True, "rank": 8})
    assert str(info.value) == (
        "Plugin 'plug' registered 'lora' with unknown metadata ['needs_reference', 'rank']; accepted: ['description']."
    )
    loss_metadata = (
        r"unknown metadata \['needs_judge'\]; accepted: \['batch_coupled', 'description', 'factory', 'needs_reference'"
    )
    with pytest.raises(PluginContractError, match=loss_metadata):
        LossSpec.build("l", dpo, "plug", {"needs_judge": True})
    with pytest.raises(
        PluginContractError, match="accepted: \\['description', 'needs_judge', 'needs_reference', 'settings'\\]"
    ):
        CheckSpec.build("c", dpo, "plug", {"batch_coupled": True})


def test_registry_builds_its_spec_type():
    judges = Registry("judge", Spec)
    with pytest.raises(PluginContractError, match="unknown metadata \\['needs_reference'\\]"):
        judges.registrar("p")("j", object(), needs_reference=True)
    checks = Registry("check", CheckSpec)
    checks.registrar("p")("c", dpo, needs_judge=True, needs_reference=False)
    assert type(checks["c"]) is CheckSpec and checks["c"].needs_judge and not checks["c"].needs_reference


def test_description_is_the_first_docstring_line_unless_given():
    assert Spec.build("d", dpo, "p", {}).description == "A DPO-like loss."
    assert Spec.build("d", dpo, "p", {"description": "Mine."}).description == "Mine."
    assert Spec.build("u", undocumented, "p", {}).description == ""
    assert Spec.build("u", dpo, "p", {}).to_dict() == {"name": "u", "plugin": "p", "description": "A DPO-like loss."}


def test_specs_are_frozen(registry):
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry["zeta"].beta = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry["zeta"].plugin = "someone else"  # type: ignore[misc]


# --- LossSpec -----------------------------------------------------------------------------------------------------


def test_loss_params_come_from_the_signature(registry):
    assert dict(registry["zeta"].params) == {"beta": 0.1, "f_divergence_type": "reverse_kl"}
    # the first (PairLogps) argument and *args/**kwargs are not parameters; a parameter without default is required
    assert dict(registry["alpha"].params) == {"margin": inspect.Parameter.empty, "scale": 1.0}
    assert registry["alpha"].to_dict()["params"] == {"margin": None, "scale": 1.0}
    # a factory's parameters are its constructor's
    assert dict(registry["mid"].params) == {"beta": 0.1, "start": 0}


def test_loss_metadata_defaults_and_to_dict(registry):
    zeta, alpha, mid = registry["zeta"], registry["alpha"], registry["mid"]
    assert (zeta.needs_reference, zeta.batch_coupled, zeta.factory) == (True, False, False)
    assert (alpha.needs_reference, mid.batch_coupled, mid.factory) == (False, True, True)
    assert zeta.to_dict() == {
        "name": "zeta",
        "plugin": "first",
        "description": "A DPO-like loss.",
        "needs_reference": True,
        "batch_coupled": False,
        "factory": False,
        "supports_f_divergence": True,
        "params": {"beta": 0.1, "f_divergence_type": "reverse_kl"},
    }


def test_supports_f_divergence_means_the_loss_takes_f_divergence_type(registry):
    assert registry["zeta"].supports_f_divergence
    assert not registry["alpha"].supports_f_divergence and not registry["mid"].supports_f_divergence


@pytest.mark.parametrize(
    "obj, metadata, message",
    [
        (42, {}, "registered loss 'l' as 42; it is not callable"),
        (lambda: None, {}, "loss 'l' must take the PairLogps as its first positional argument"),
        (lambda *, logps: None, {}, "must take the PairLogps as its first positional argument"),
        (lambda *logps: None, {}, "must take the PairLogps as its first positional argument"),
        (dpo, {"params": {"beta": 0.1}}, "the parameters of loss 'l' are read from its signature, not passed"),
    ],
)
def test_loss_spec_refuses(obj, metadata, message):
    with pytest.raises(PluginContractError, match=f"Plugin 'p'.*{message}"):
        LossSpec.build("l", obj, "p", metadata)


def test_factory_losses_get_a_fresh_instance_per_create(registry):
    spec = registry["mid"]
    first, second = spec.create(beta=0.2, start=10), spec.create()
    assert isinstance(first, BoundLoss) and isinstance(first.fn, Counting) and first.fn is not second.fn
    assert (first.fn.beta, first.fn.calls, second.fn.beta, second.fn.calls) == (0.2, 10, 0.1, 0)
    assert first(LOGPS).losses.tolist() == [11.0, 11.0] and first(LOGPS).losses.tolist() == [12.0, 12.0]
    assert second(LOGPS).losses.tolist() == [1.0, 1.0]  # its own state
    assert spec(LOGPS).losses.tolist() == [1.0, 1.0]  # spec(logps) builds a fresh one too


def test_function_losses_bind_their_parameters(registry):
    bound = registry["zeta"].create(beta=0.5)
    # the parameters given, and the defaults of the others
    assert bound.fn is dpo and bound.params == {"beta": 0.5, "f_divergence_type": "reverse_kl"}
    assert bound.spec is registry["zeta"]
    expected = -torch.nn.functional.logsigmoid(torch.tensor([0.5 * (0.5 - -1.0), 0.5 * (0.0 - 1.0)]))
    torch.testing.assert_close(bound(LOGPS).losses, expected)
    torch.testing.assert_close(registry["zeta"](LOGPS, beta=0.5).losses, expected)
