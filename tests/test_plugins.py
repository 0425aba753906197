"""The plugin system: every hook, duplicates, misspelled hooks, unknown names, and the environment filters."""

from __future__ import annotations

import logging
import sys
import textwrap

import pluggy
import pytest
import torch.nn.functional as F

import dpo_plugin
from dpo_plugin import LossOutput
from dpo_plugin.errors import DuplicateNameError, UnknownNameError
from dpo_plugin.plugins import get_plugin_manager


def tempered(logps, *, beta: float = 0.1, temperature: float = 2.0):
    """A test loss: −log σ(β·Δ/T)."""
    chosen, rejected = logps.logratios()
    return LossOutput(-F.logsigmoid(beta * (chosen - rejected) / temperature), beta * chosen, beta * rejected)


class LossPlugin:
    @staticmethod
    @dpo_plugin.hookimpl
    def register_losses(register):
        register("tempered", tempered, needs_reference=True)


def test_a_plugin_registers_a_loss(register_plugin):
    assert "tempered" not in dpo_plugin.losses()
    register_plugin(LossPlugin, "my-plugin")
    spec = dpo_plugin.losses()["tempered"]
    assert spec.plugin == "my-plugin" and spec.obj is tempered and spec.params == {"beta": 0.1, "temperature": 2.0}
    assert spec.description == "A test loss: −log σ(β·Δ/T)."
    get_plugin_manager().unregister(LossPlugin)
    assert "tempered" not in dpo_plugin.losses()


@pytest.mark.parametrize(
    "hook, public",
    [
        ("register_reference_strategies", dpo_plugin.reference_strategies),
        ("register_adapters", dpo_plugin.adapters),
        ("register_judges", dpo_plugin.judges),
        ("register_checks", dpo_plugin.checks),
    ],
)
def test_every_register_hook(hook, public, register_plugin):
    marker = object()

    def implementation(register):
        register("from-test", marker)

    implementation.__name__ = hook
    plugin = type("Plugin", (), {hook: staticmethod(dpo_plugin.hookimpl(implementation))})
    register_plugin(plugin, "hook-plugin")
    spec = public()["from-test"]
    assert spec.obj is marker and spec.plugin == "hook-plugin"


def test_post_train_receives_the_report(register_plugin):
    received = []

    class Forwarder:
        @staticmethod
        @dpo_plugin.hookimpl
        def post_train(report):
            received.append(report)

    register_plugin(Forwarder, "forwarder")
    report = {"passed": True, "checks": {}}
    get_plugin_manager().hook.post_train(report=report)
    assert received == [report]


def test_duplicate_names_name_both_plugins(register_plugin):
    class Again:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_losses(register):
            register("sigmoid", tempered)

    register_plugin(Again, "copycat")
    with pytest.raises(DuplicateNameError) as info:
        dpo_plugin.losses()
    assert "'dpo_plugin.loss_variants.dpo'" in str(info.value) and "'copycat'" in str(info.value)


def test_override_flag_allows_a_replacement(register_plugin):
    class Override:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_losses(register):
            register("hinge", tempered, override=True)

    register_plugin(Override, "override")
    assert dpo_plugin.losses()["hinge"].plugin == "override"


def test_misspelled_hook_fails_check_pending(register_plugin):
    class Typo:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_loss(register):
            pass

    pm = get_plugin_manager()
    register_plugin(Typo, "typo")
    with pytest.raises(pluggy.PluginValidationError, match="Did you mean 'register_losses'"):
        pm.check_pending()


def test_unknown_hook_argument_fails_at_registration():
    class Extra:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_losses(register, config):
            pass

    with pytest.raises(pluggy.PluginValidationError, match="config"):
        get_plugin_manager().register(Extra, "extra")
    assert not get_plugin_manager().has_plugin("extra")


def test_unknown_names_list_the_closest():
    with pytest.raises(UnknownNameError) as info:
        dpo_plugin.losses()["hnge"]
    message = str(info.value)
    assert "Unknown loss 'hnge'. Did you mean 'hinge'?" in message and "sigmoid" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert dpo_plugin.losses().get("hnge") is None


@pytest.fixture
def installed_distribution(tmp_path, monkeypatch):
    """A real distribution with a `dpo_plugin` entry point, found by importlib.metadata on sys.path."""
    (tmp_path / "envplugin.py").write_text(
        textwrap.dedent(
            '''
            import dpo_plugin

            def tempered(logps, *, beta: float = 0.1):
                """−log σ(β·Δ/2)."""
                chosen, rejected = logps.logratios()
                return dpo_plugin.LossOutput(((beta * (chosen - rejected) / 2).sigmoid()).log().neg(), chosen, rejected)

            @dpo_plugin.hookimpl
            def register_losses(register):
                register("env_tempered", tempered)
            '''
        )
    )
    info = tmp_path / "dpo_env_plugin-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dpo-env-plugin\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[dpo_plugin]\nenvplugin = envplugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("envplugin", None)


def test_entry_point_plugins_load_by_default(installed_distribution, fresh_plugin_manager):
    pm = fresh_plugin_manager()
    assert dpo_plugin.losses()["env_tempered"].plugin == "envplugin"
    assert pm.distributions["envplugin"] == ("dpo-env-plugin", "1.2.3")


@pytest.mark.parametrize("value, loaded", [("other", False), ("", False), ("envplugin", True), ("dpo-env-plugin", True)])
def test_load_plugins_filter(value, loaded, installed_distribution, fresh_plugin_manager, monkeypatch):
    monkeypatch.setenv("DPO_PLUGIN_LOAD_PLUGINS", value)
    fresh_plugin_manager()
    assert ("env_tempered" in dpo_plugin.losses()) is loaded
    assert "sigmoid" in dpo_plugin.losses()  # built-ins always load


def test_block_plugins(installed_distribution, fresh_plugin_manager, monkeypatch):
    monkeypatch.setenv("DPO_PLUGIN_BLOCK_PLUGINS", "envplugin,dpo_plugin.loss_variants.aot")
    fresh_plugin_manager()
    names = set(dpo_plugin.losses())
    assert "env_tempered" not in names and "aot" not in names and "aot_unpaired" not in names and "sigmoid" in names


def test_trace_logs_hook_calls(fresh_plugin_manager, monkeypatch, caplog):
    monkeypatch.setenv("DPO_PLUGIN_TRACE", "1")
    with caplog.at_level(logging.INFO, logger="dpo_plugin.trace"):
        fresh_plugin_manager()
        dpo_plugin.losses()
    assert any("register_losses" in record.getMessage() for record in caplog.records)
