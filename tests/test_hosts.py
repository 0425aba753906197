"""Hosts are plugins: ``register_hosts``, the ``trl`` host, choosing a host from the YAML or ``--host``,
a broken host."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from test_plugins import install_distribution

import dpo_plugin
from dpo_plugin.cli import main
from dpo_plugin.errors import ConfigError, PluginContractError, UnknownNameError
from dpo_plugin.hosts.base import Host, TrainResult
from dpo_plugin.plugins import get_plugin_manager, hosts


class RecordingHost(Host):
    """A third-party host that records the command lines it was asked to train with."""

    trl_versions = ">=1.0"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def backend(self):  # pragma: no cover - not used by these tests
        raise NotImplementedError

    def train(self, argv: Sequence[str]) -> TrainResult:
        self.calls.append(list(argv))
        return TrainResult(Path("out"), {"train_loss": 0.5}, None)


@pytest.fixture
def recording_host(register_plugin):
    host = RecordingHost()

    class Plugin:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_hosts(register):
            register("recording", host)

    register_plugin(Plugin, "recording-plugin")
    return host


def test_the_trl_host_is_registered_through_the_same_hook():
    spec = hosts()["trl"]
    assert spec.plugin == "dpo_plugin.hosts.trl.host" and spec.obj.trl_versions == ">=1.14.1,<1.17"
    assert isinstance(spec.obj, Host)


def test_a_third_party_host_trains_when_the_yaml_names_it(recording_host, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("host: recording\nmax_steps: 2\n")
    assert main(["train", "--config", str(config), "--max_steps", "3"]) == 0
    assert recording_host.calls == [["--config", str(config), "--max_steps", "3"]]
    assert "Trained model saved to out" in capsys.readouterr().out


def test_the_host_flag_overrides_the_yaml(recording_host, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("host: trl\n")
    assert main(["train", "--host", "recording", "--config", str(config)]) == 0
    assert recording_host.calls == [["--config", str(config)]]


def test_an_unknown_host_names_the_registered_ones_and_the_closest(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("host: trll\nmodel_name_or_path: x\n")
    assert main(["train", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        "error: Unknown host 'trll'. Did you mean 'trl'? Registered host names: axolotl, trl.\n"
    )
    with pytest.raises(UnknownNameError, match="Registered host names: axolotl, trl"):
        hosts()["axolotl-nope"]


def test_a_host_must_be_a_host_instance(register_plugin):
    class Plugin:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_hosts(register):
            register("bad", RecordingHost)  # the class, not an instance

    register_plugin(Plugin, "bad-host-plugin")
    with pytest.raises(PluginContractError, match="registered host 'bad' as .*it must be a Host instance"):
        hosts()


def test_a_host_outside_its_trl_range_is_refused_before_anything_loads():
    installed = importlib.metadata.version("trl")

    class FutureHost(RecordingHost):
        trl_versions = ">=99"

    with pytest.raises(ConfigError) as info:
        FutureHost().check_versions()
    assert str(info.value) == (
        f"The FutureHost host runs with TRL >=99, but TRL {installed} is installed: pip install 'trl>=99'."
    )


BROKEN_HOST = """
import dpo_plugin

@dpo_plugin.hookimpl
def register_hosts(register):
    import a_framework_that_is_not_installed  # raises ModuleNotFoundError
"""


def test_a_host_whose_registration_raises_is_left_out_and_named(tmp_path, monkeypatch, fresh_plugin_manager):
    install_distribution(tmp_path, BROKEN_HOST, module="broken_host_module", entry_point="broken_host")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DPO_PLUGIN_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("DPO_PLUGIN_BLOCK_PLUGINS", raising=False)
    try:
        fresh_plugin_manager()  # it loads: its hook has not run yet
        with pytest.raises(ConfigError) as info:
            hosts()
        assert str(info.value) == (
            "The plugin 'broken_host' (entry point broken_host = broken_host_module, from dpo-env-dist 1.2.3) failed "
            "to load: register_hosts raised ModuleNotFoundError: No module named 'a_framework_that_is_not_installed'. "
            "Fix or uninstall it (pip uninstall dpo-env-dist), or skip it with DPO_PLUGIN_BLOCK_PLUGINS=broken_host."
        )
        pm = get_plugin_manager(allow_broken=True)
        assert not pm.has_plugin("broken_host") and list(pm.registry("hosts", allow_broken=True)) == ["trl", "axolotl"]
        with pytest.raises(ConfigError, match="broken_host"):
            get_plugin_manager()  # every later command names it, as for a plugin that failed to import
    finally:
        sys.modules.pop("broken_host_module", None)


def test_plugins_listing_shows_the_hosts(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("dpo_plugin.hosts.trl.host"))
    assert row.split()[-2:] == ["hosts:", "trl"]
