"""The real console script lists plugins and losses."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import dpo_plugin

CLI = str(Path(sys.executable).with_name("dpo-plugin"))


def _run(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, check=True).stdout


def test_plugins_json_lists_the_builtin_losses():
    listing = json.loads(_run("plugins", "--json"))
    builtin = {name: spec for name, spec in listing["losses"].items() if spec["plugin"].startswith("dpo_plugin.")}
    assert len(builtin) >= 24
    assert builtin["sigmoid"]["plugin"] == "dpo_plugin.loss_variants.dpo"
    plugins = {p["name"]: p for p in listing["plugins"]}
    assert plugins["dpo_plugin.loss_variants.dpo"]["builtin"] is True
    assert "sigmoid" in plugins["dpo_plugin.loss_variants.dpo"]["registered"]["losses"]
    assert {"auto", "copy", "adapter", "precomputed", "none", "sync", "path"} <= set(listing["reference_strategies"])


def test_plugins_table():
    table = _run("plugins")
    assert table.splitlines()[0].split() == ["plugin", "from", "registers"]
    assert "dpo_plugin.loss_variants.squared" in table and "ipo_paper" in table


def test_losses_json_matches_the_signatures():
    losses = json.loads(_run("losses", "--json"))
    assert losses["simpo"]["params"] == {"beta": 2.0, "gamma": 0.5} and losses["simpo"]["needs_reference"] is False
    assert losses["aot"]["batch_coupled"] is True and losses["sigmoid"]["supports_f_divergence"] is True
    for name, spec in losses.items():
        obj = dpo_plugin.losses()[name].obj
        signature = inspect.signature(obj)
        expected = {p.name: p.default for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert spec["params"] == expected, name


def test_bad_command_line():
    result = subprocess.run([CLI, "plugins", "--bogus"], capture_output=True, text=True)
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
