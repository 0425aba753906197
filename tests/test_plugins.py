"""The plugin system: every hook, duplicates, misspelled hooks, unknown names,
entry points and the environment filters."""

from __future__ import annotations

import logging
import math
import sys
import textwrap
import types

import pluggy
import pytest
import torch
import torch.nn.functional as F

import dpo_plugin
from dpo_plugin import LossOutput, PairLogps
from dpo_plugin.adapter_recipes.recipe import FullFineTuning
from dpo_plugin.errors import ConfigError, DuplicateNameError, PluginContractError, UnknownNameError
from dpo_plugin.plugins import get_plugin_manager, reset_plugin_manager
from dpo_plugin.reference.base import ReferenceStrategy


def tempered(logps, *, beta: float = 0.1, temperature: float = 2.0):
    """A test loss: −log σ(β·Δ/T)."""
    chosen, rejected = logps.logratios()
    return LossOutput(-F.logsigmoid(beta * (chosen - rejected) / temperature), beta * chosen, beta * rejected)


class LossPlugin:
    @staticmethod
    @dpo_plugin.hookimpl
    def register_losses(register):
        register("tempered", tempered, needs_reference=True)


def test_a_plugin_class_registers_a_loss(register_plugin):
    assert "tempered" not in dpo_plugin.losses()
    register_plugin(LossPlugin, "my-plugin")
    spec = dpo_plugin.losses()["tempered"]
    assert (
        spec.plugin == "my-plugin" and spec.obj is tempered and dict(spec.params) == {"beta": 0.1, "temperature": 2.0}
    )
    assert spec.description == "A test loss: −log σ(β·Δ/T)." and spec.needs_reference
    assert list(dpo_plugin.losses())[-1] == "tempered"  # after the built-ins
    # the registered loss is usable like a built-in: Δ = (0.5 − (−1)) = 1.5 → −log σ(0.4·1.5/4)
    logps = PairLogps(*(torch.tensor([v], dtype=torch.float64) for v in (-5.0, -7.0, -5.5, -6.0)))
    assert spec(logps, beta=0.4, temperature=4.0).losses.item() == pytest.approx(math.log1p(math.exp(-0.15)), rel=1e-12)
    get_plugin_manager().unregister(LossPlugin)
    assert "tempered" not in dpo_plugin.losses()


def test_a_plugin_module_registers_a_loss(register_plugin):
    def doubled(logps, *, beta: float = 0.1):
        """Twice the chosen log-probs."""
        return LossOutput(2 * logps.chosen, logps.chosen, logps.rejected)

    def register_losses(register):
        register("doubled", doubled, needs_reference=False)

    module = types.ModuleType("module_plugin")
    module.doubled = doubled
    module.register_losses = dpo_plugin.hookimpl(register_losses)
    register_plugin(module, "module_plugin")
    spec = dpo_plugin.losses()["doubled"]
    assert spec.plugin == "module_plugin" and spec.obj is module.doubled and not spec.needs_reference
    assert ("module_plugin", module) in get_plugin_manager().list_name_plugin()
    get_plugin_manager().unregister(module)
    assert "doubled" not in dpo_plugin.losses()


def _plugin_for(hook, implementation):
    implementation.__name__ = hook
    return type("Plugin", (), {hook: staticmethod(dpo_plugin.hookimpl(implementation))})


class ToyStrategy(ReferenceStrategy):
    """A test strategy."""


def toy_check(ctx, *, level: int = 1):
    """A test check."""


#: A valid object of each kind, and an invalid one with the words of the error it gets.
VALID = {
    "register_losses": tempered,
    "register_reference_strategies": ToyStrategy,
    "register_adapters": FullFineTuning(),
    "register_judges": lambda **params: lambda prompts, first, second: [0.5] * len(prompts),
    "register_checks": toy_check,
}
INVALID = {
    "register_losses": ("not callable", "it is not callable"),
    "register_reference_strategies": (ToyStrategy(), "must be a subclass of ReferenceStrategy"),
    "register_adapters": (FullFineTuning, "must be an AdapterRecipe instance"),
    "register_judges": ("function", "must be a factory"),
    "register_checks": (lambda: None, "must be a callable check(ctx, **check_params)"),
}

KIND_HOOKS = [
    ("register_losses", dpo_plugin.losses, "loss"),
    ("register_reference_strategies", dpo_plugin.reference_strategies, "reference strategy"),
    ("register_adapters", dpo_plugin.adapters, "adapter"),
    ("register_judges", dpo_plugin.judges, "judge"),
    ("register_checks", dpo_plugin.checks, "check"),
]


@pytest.mark.parametrize("hook, public, label", KIND_HOOKS, ids=[h for h, _, _ in KIND_HOOKS])
def test_every_register_hook(hook, public, label, register_plugin):
    item = VALID[hook]
    assert "from-test" not in public()
    plugin = register_plugin(_plugin_for(hook, lambda register: register("from-test", item)), "hook-plugin")
    spec = public()["from-test"]
    assert spec.obj is item and spec.plugin == "hook-plugin"
    assert public().kind == label
    get_plugin_manager().unregister(plugin)
    assert "from-test" not in public()


def test_post_train_receives_the_report(register_plugin):
    received = []

    class Forwarder:
        @staticmethod
        @dpo_plugin.hookimpl
        def post_train(report):
            received.append(report)

    register_plugin(Forwarder, "forwarder")
    report = {"passed": True, "checks": {"reward_margin": {"passed": True, "metrics": {}}}}
    assert get_plugin_manager().hook.post_train(report=report) == []
    assert len(received) == 1 and received[0] is report


@pytest.mark.parametrize("hook, public, label", KIND_HOOKS, ids=[h for h, _, _ in KIND_HOOKS])
def test_duplicate_names_name_both_plugins(hook, public, label, register_plugin):
    item = VALID[hook]
    register_plugin(_plugin_for(hook, lambda register: register("twice", item)), "first-plugin")
    register_plugin(_plugin_for(hook, lambda register: register("twice", item)), "copycat")
    with pytest.raises(DuplicateNameError) as info:
        public()
    assert f"{label.capitalize()} 'twice' is registered by two plugins: 'first-plugin' and 'copycat'" in str(info.value)


@pytest.mark.parametrize("hook, public, label", KIND_HOOKS, ids=[h for h, _, _ in KIND_HOOKS])
def test_a_wrong_object_is_refused_when_registered(hook, public, label, register_plugin):
    item, words = INVALID[hook]
    register_plugin(_plugin_for(hook, lambda register: register("wrong", item)), "sloppy-plugin")
    with pytest.raises(PluginContractError) as info:
        public()
    message = str(info.value)
    assert f"Plugin 'sloppy-plugin' registered {label} 'wrong'" in message and words in message
    assert "DPO_PLUGIN_BLOCK_PLUGINS=sloppy-plugin" in message


def test_duplicate_of_a_builtin(register_plugin):
    register_plugin(_plugin_for("register_losses", lambda register: register("sigmoid", tempered)), "copycat")
    with pytest.raises(DuplicateNameError, match="'dpo_plugin.loss_variants.dpo' and 'copycat'"):
        dpo_plugin.losses()


def test_override_flag_allows_a_replacement(register_plugin):
    position = list(dpo_plugin.losses()).index("hinge")
    register_plugin(
        _plugin_for("register_losses", lambda register: register("hinge", tempered, override=True)), "override"
    )
    assert dpo_plugin.losses()["hinge"].plugin == "override" and dpo_plugin.losses()["hinge"].obj is tempered
    assert list(dpo_plugin.losses()).index("hinge") == position


def test_misspelled_hook_fails_check_pending(register_plugin):
    class Typo:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_loss(register):
            pass

    pm = get_plugin_manager()
    register_plugin(Typo, "typo")
    with pytest.raises(pluggy.PluginValidationError) as info:
        pm.check_pending()
    message = str(info.value)
    assert "unknown hook 'register_loss'" in message and "Did you mean 'register_losses'?" in message
    assert "The hooks are: register_losses, register_reference_strategies" in message and "post_train" in message
    assert info.value.plugin is Typo


def test_unknown_hook_argument_fails_at_registration():
    class Extra:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_losses(register, config):
            pass

    with pytest.raises(pluggy.PluginValidationError, match="config"):
        get_plugin_manager().register(Extra, "extra")
    assert not get_plugin_manager().has_plugin("extra")


@pytest.mark.parametrize(
    "public, label, typo, closest",
    [
        (dpo_plugin.losses, "loss", "hnge", "hinge"),
        (dpo_plugin.reference_strategies, "reference strategy", "precomputd", "precomputed"),
        (dpo_plugin.checks, "check", "win-rate", "win_rate"),
    ],
)
def test_unknown_names_list_the_names_and_the_closest(public, label, typo, closest):
    with pytest.raises(UnknownNameError) as info:
        public()[typo]
    message = str(info.value)
    assert message.startswith(f"Unknown {label} {typo!r}. Did you mean {closest!r}? Registered {label} names: ")
    assert all(name in message for name in public())
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    with pytest.raises(KeyError):
        public()[typo]
    with pytest.raises(ValueError):
        public()[typo]
    assert public().get(typo) is None


# --- entry points and the environment -----------------------------------------------------------------------------

PLUGIN_SOURCE = '''
import dpo_plugin

def halved(logps, *, beta: float = 0.1):
    """−log σ(β·Δ/2)."""
    chosen, rejected = logps.logratios()
    return dpo_plugin.LossOutput(((beta * (chosen - rejected) / 2).sigmoid()).log().neg(), chosen, rejected)

@dpo_plugin.hookimpl
def register_losses(register):
    register("env_halved", halved)

@dpo_plugin.hookimpl
def register_judges(register):
    register("env_judge", halved)
'''


def install_distribution(root, source=PLUGIN_SOURCE, module="env_plugin_module", entry_point="env_plugin"):
    """Write a real installed distribution (dist-info with METADATA and entry_points.txt)
    plus its module into ``root``."""
    sys.modules.pop(module, None)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / "dpo_env_dist-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dpo-env-dist\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(
        f"[dpo_plugin]\n{entry_point} = {module}\n\n[console_scripts]\nunrelated = {module}:halved\n"
    )


@pytest.fixture
def installed_distribution(tmp_path, monkeypatch):
    """A distribution `dpo-env-dist` with entry point `env_plugin`, found by importlib.metadata on sys.path."""
    install_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DPO_PLUGIN_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("DPO_PLUGIN_BLOCK_PLUGINS", raising=False)
    yield tmp_path
    sys.modules.pop("env_plugin_module", None)


def test_entry_point_plugins_load_by_default(installed_distribution, fresh_plugin_manager):
    pm = fresh_plugin_manager()
    assert dpo_plugin.losses()["env_halved"].plugin == "env_plugin"
    assert dpo_plugin.judges()["env_judge"].plugin == "env_plugin"
    assert pm.distributions["env_plugin"] == ("dpo-env-dist", "1.2.3")
    assert pm.has_plugin("env_plugin") and "unrelated" not in dict(pm.list_name_plugin())  # other groups ignored


@pytest.mark.parametrize(
    "value, loaded",
    [
        ("other", False),
        ("", False),
        ("env_plugin", True),
        ("Env-Plugin", True),
        ("dpo-env-dist", True),
        ("dpo_env_dist", True),
        ("other, env_plugin", True),
    ],
)
def test_load_plugins_filter(value, loaded, installed_distribution, fresh_plugin_manager, monkeypatch):
    monkeypatch.setenv("DPO_PLUGIN_LOAD_PLUGINS", value)
    fresh_plugin_manager()
    assert ("env_halved" in dpo_plugin.losses()) is loaded
    assert "sigmoid" in dpo_plugin.losses()  # built-ins always load


@pytest.mark.parametrize("value", ["env_plugin", "ENV-PLUGIN", "dpo-env-dist", "dpo_env_dist", "something, env_plugin"])
def test_block_plugins_blocks_an_entry_point(value, installed_distribution, fresh_plugin_manager, monkeypatch):
    monkeypatch.setenv("DPO_PLUGIN_BLOCK_PLUGINS", value)
    pm = fresh_plugin_manager()
    assert "env_halved" not in dpo_plugin.losses() and "env_judge" not in dpo_plugin.judges()
    assert "env_plugin" not in pm.distributions and "sigmoid" in dpo_plugin.losses()


def test_block_plugins_wins_over_load_plugins(installed_distribution, fresh_plugin_manager, monkeypatch):
    monkeypatch.setenv("DPO_PLUGIN_LOAD_PLUGINS", "env_plugin")
    monkeypatch.setenv("DPO_PLUGIN_BLOCK_PLUGINS", "env_plugin")
    fresh_plugin_manager()
    assert "env_halved" not in dpo_plugin.losses()


def test_block_plugins_removes_a_builtin_module(fresh_plugin_manager, monkeypatch):
    monkeypatch.setenv("DPO_PLUGIN_BLOCK_PLUGINS", "dpo_plugin.loss_variants.aot")
    pm = fresh_plugin_manager()
    names = set(dpo_plugin.losses())
    assert "aot" not in names and "aot_unpaired" not in names
    assert {"sigmoid", "ipo", "simpo", "beta_dpo"} <= names and len(names) == 22
    assert not pm.has_plugin("dpo_plugin.loss_variants.aot") and pm.is_blocked("dpo_plugin.loss_variants.aot")


def test_a_broken_entry_point_plugin_fails_when_the_manager_is_built(tmp_path, monkeypatch, fresh_plugin_manager):
    """A misspelled hook in an installed plugin fails loudly (check_pending) instead of being ignored: a ConfigError
    naming the entry point, its distribution and the way past it; the manager itself keeps the other plugins."""
    typo = PLUGIN_SOURCE.replace("def register_judges", "def register_judge")
    install_distribution(tmp_path, typo, module="typo_plugin_module", entry_point="typo_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DPO_PLUGIN_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("DPO_PLUGIN_BLOCK_PLUGINS", raising=False)
    try:
        with pytest.raises(ConfigError) as info:
            fresh_plugin_manager()
        assert str(info.value) == (
            "The plugin 'typo_plugin' (entry point typo_plugin = typo_plugin_module, from dpo-env-dist 1.2.3) failed "
            "to load: PluginValidationError: plugin 'typo_plugin' implements unknown hook 'register_judge'. Did you "
            "mean 'register_judges'? The hooks are: register_losses, register_reference_strategies, register_adapters, "
            "register_judges, register_checks, register_hosts, post_train. "
            "Fix or uninstall it (pip uninstall dpo-env-dist), or skip "
            "it with DPO_PLUGIN_BLOCK_PLUGINS=typo_plugin."
        )
        pm = get_plugin_manager(allow_broken=True)
        assert list(pm.broken) == ["typo_plugin"] and not pm.has_plugin("typo_plugin")
        assert "env_halved" not in pm.registry("losses") and "sigmoid" in pm.registry("losses")
        monkeypatch.setenv("DPO_PLUGIN_BLOCK_PLUGINS", "typo_plugin")  # the way out the error suggests
        reset_plugin_manager()
        assert "sigmoid" in dpo_plugin.losses()
    finally:
        sys.modules.pop("typo_plugin_module", None)


def test_an_entry_point_whose_import_raises_is_named_and_the_others_still_load(
    tmp_path, monkeypatch, fresh_plugin_manager
):
    install_distribution(
        tmp_path,
        PLUGIN_SOURCE + "\nraise ImportError('needs the cuda driver')\n",
        module="boom_module",
        entry_point="boom",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DPO_PLUGIN_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("DPO_PLUGIN_BLOCK_PLUGINS", raising=False)
    try:
        with pytest.raises(ConfigError) as info:
            dpo_plugin.losses()
        assert str(info.value) == (
            "The plugin 'boom' (entry point boom = boom_module, from dpo-env-dist 1.2.3) failed to load: ImportError: "
            "needs the cuda driver. Fix or uninstall it (pip uninstall dpo-env-dist), or skip it with "
            "DPO_PLUGIN_BLOCK_PLUGINS=boom."
        )
        assert "sigmoid" in get_plugin_manager(allow_broken=True).registry("losses")
    finally:
        sys.modules.pop("boom_module", None)


def test_trace_logs_hook_calls(fresh_plugin_manager, monkeypatch, caplog):
    monkeypatch.setenv("DPO_PLUGIN_TRACE", "1")
    with caplog.at_level(logging.DEBUG, logger="dpo_plugin.trace"):
        fresh_plugin_manager()
        dpo_plugin.losses()
    messages = [r.getMessage() for r in caplog.records if r.name == "dpo_plugin.trace"]
    assert any("register_losses" in m for m in messages)
    assert any("sigmoid (dpo_plugin.loss_variants.dpo)" in m for m in messages)  # the registrations too


def test_no_trace_without_the_variable(fresh_plugin_manager, monkeypatch, caplog):
    monkeypatch.delenv("DPO_PLUGIN_TRACE", raising=False)
    with caplog.at_level(logging.INFO, logger="dpo_plugin.trace"):
        fresh_plugin_manager()
        dpo_plugin.losses()
    assert not [r for r in caplog.records if r.name == "dpo_plugin.trace" and r.levelno >= logging.INFO]
