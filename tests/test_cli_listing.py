"""The real console script lists plugins and losses (`dpo-plugin plugins`, `dpo-plugin losses`)."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dpo_plugin

CLI = str(Path(sys.executable).with_name("dpo-plugin"))
BUILTIN_LOSSES = {
    "dpo_plugin.loss_variants.dpo": [
        "sigmoid",
        "cdpo",
        "robust",
        "hinge",
        "exo_pair",
        "discopop",
        "sigmoid_norm",
        "dpop",
        "rdpo",
    ],
    "dpo_plugin.loss_variants.squared": ["ipo", "ipo_paper", "sppo_hard", "cal_dpo"],
    "dpo_plugin.loss_variants.pointwise": ["nca_pair", "bco_pair", "apo_zero", "apo_down"],
    "dpo_plugin.loss_variants.aot": ["aot", "aot_unpaired"],
    "dpo_plugin.loss_variants.reference_free": ["simpo", "cpo", "orpo", "sft"],
    "dpo_plugin.loss_variants.adaptive": ["beta_dpo"],
}


REPO = str(Path(__file__).resolve().parent.parent)


def run_cli(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """The console script on this checkout's package (first on PYTHONPATH, before any other install)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DPO_PLUGIN_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return subprocess.run([CLI, *args], capture_output=True, text=True, check=check, env={**clean, **env})


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> str:
    """A directory holding an installed distribution `listing-dist` whose entry point `listing_plugin` adds a loss."""
    root = tmp_path_factory.mktemp("site")
    (root / "listing_plugin_module.py").write_text(
        textwrap.dedent(
            '''
            import dpo_plugin

            def margin(logps, *, beta: float = 0.3, margin: float = 1.0):
                """A third-party loss."""
                raise NotImplementedError

            @dpo_plugin.hookimpl
            def register_losses(register):
                register("listing_margin", margin, needs_reference=False)
            '''
        )
    )
    info = root / "listing_dist-0.4.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: listing-dist\nVersion: 0.4.0\n")
    (info / "entry_points.txt").write_text("[dpo_plugin]\nlisting_plugin = listing_plugin_module\n")
    return str(root)


@pytest.fixture(scope="module")
def plugins_json(third_party):
    return json.loads(run_cli("plugins", "--json", PYTHONPATH=third_party).stdout)


def test_plugins_json_lists_the_builtin_losses_with_their_plugins(plugins_json):
    losses = plugins_json["losses"]
    builtin = {name: spec for name, spec in losses.items() if spec["plugin"].startswith("dpo_plugin.")}
    assert len(builtin) >= 24
    for plugin, names in BUILTIN_LOSSES.items():
        assert all(losses[name]["plugin"] == plugin for name in names), plugin
    plugins = {p["name"]: p for p in plugins_json["plugins"]}
    for plugin, names in BUILTIN_LOSSES.items():
        assert plugins[plugin]["builtin"] is True and plugins[plugin]["distribution"] == "dpo-plugin"
        assert plugins[plugin]["registered"]["losses"] == names
    assert {"auto", "copy", "adapter", "precomputed", "none", "sync", "path"} <= set(
        plugins_json["reference_strategies"]
    )
    assert {"reward_margin", "win_rate"} <= set(plugins_json["checks"])
    assert set(plugins_json) == {"plugins", "losses", "reference_strategies", "adapters", "judges", "checks"}


def test_plugins_json_lists_an_installed_third_party_plugin(plugins_json):
    plugins = {p["name"]: p for p in plugins_json["plugins"]}
    entry = plugins["listing_plugin"]
    assert (entry["builtin"], entry["distribution"], entry["version"]) == (False, "listing-dist", "0.4.0")
    assert entry["registered"]["losses"] == ["listing_margin"]
    spec = plugins_json["losses"]["listing_margin"]
    assert spec["plugin"] == "listing_plugin" and spec["params"] == {"beta": 0.3, "margin": 1.0}
    assert spec["needs_reference"] is False and spec["description"] == "A third-party loss."


def test_plugins_table(third_party):
    lines = run_cli("plugins", PYTHONPATH=third_party).stdout.splitlines()
    assert lines[0].split() == ["plugin", "from", "registers"] and set(lines[1].replace(" ", "")) == {"-"}
    rows = {line.split()[0]: line for line in lines[2:]}
    assert rows["dpo_plugin.loss_variants.squared"].split(None, 4)[1:] == [
        "dpo-plugin",
        dpo_plugin.__version__,
        "(built-in)",
        "losses: ipo, ipo_paper, sppo_hard, cal_dpo",
    ]
    assert rows["listing_plugin"].split(None, 3)[1:] == ["listing-dist", "0.4.0", "losses: listing_margin"]


@pytest.fixture(scope="module")
def losses_json():
    return json.loads(run_cli("losses", "--json").stdout)


def test_losses_json_matches_the_signatures(losses_json):
    simpo = losses_json["simpo"]
    assert simpo["params"] == {"beta": 2.0, "gamma": 0.5} and simpo["needs_reference"] is False
    assert simpo["plugin"] == "dpo_plugin.loss_variants.reference_free"
    assert losses_json["sft"]["params"] == {}
    beta_dpo = losses_json["beta_dpo"]
    assert beta_dpo["factory"] is True and beta_dpo["params"] == {
        "beta": 0.1,
        "alpha": 0.6,
        "rho": 0.2,
        "momentum": 0.9,
    }
    assert losses_json["aot"]["batch_coupled"] is True and losses_json["sigmoid"]["supports_f_divergence"] is True
    assert list(losses_json) == list(dpo_plugin.losses())
    for name, spec in losses_json.items():
        obj = dpo_plugin.losses()[name].obj
        expected = {p.name: p.default for p in inspect.signature(obj).parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert spec["params"] == expected, name
        assert spec["needs_reference"] is (name not in {"simpo", "cpo", "orpo", "sft"}), name
        assert spec["supports_f_divergence"] is ("f_divergence_type" in expected), name


def _table_rows(lines: list[str]) -> dict[str, list[str]]:
    """A printed table's rows, name → cells: columns from the dashes under the header, wrapped lines joined."""
    spans = [m.span() for m in re.finditer(r"-+", lines[1])]
    spans[-1] = (spans[-1][0], None)
    body = "\n".join(lines[2:]).split("\n(")[0]  # the note after the table starts with "("
    rows = {}
    for block in body.split("\n\n"):
        block_lines = [line for line in block.splitlines() if line.strip()]
        cells = [" ".join(line[a:b].strip() for line in block_lines if line[a:b].strip()) for a, b in spans]
        rows[cells[0]] = cells
    return rows


def test_losses_table_fits_100_columns_without_a_blocked_module():
    lines = run_cli("losses", DPO_PLUGIN_BLOCK_PLUGINS="dpo_plugin.loss_variants.aot").stdout.splitlines()
    assert max(map(len, lines)) <= 100
    assert lines[0].split() == ["loss", "reference", "parameters", "(defaults)", "description"]
    rows = _table_rows(lines)
    assert "aot" not in rows and "aot_unpaired" not in rows and len(rows) == 22
    simpo = dpo_plugin.losses()["simpo"]
    assert rows["simpo"] == ["simpo", "no", "beta=2.0, gamma=0.5", simpo.description.replace("``", "")]
    robust = "beta=0.1, label_smoothing=0.0, f_divergence_type=reverse_kl, f_alpha_divergence_coef=0.5"
    assert rows["robust"][1:3] == ["yes", robust]  # wrapped over three lines, read back whole
    assert rows["ipo"][1] == "yes" and rows["sft"][2] == "-"


def test_bad_command_line():
    result = run_cli("plugins", "--bogus", check=False)
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
