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
REPO = Path(__file__).resolve().parents[1]
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


def run_cli(*args: str, check: bool = True, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """The console script on this checkout's code (first on PYTHONPATH: the script may be installed from another),
    with no third-party plugin but those the test names in ``DPO_PLUGIN_LOAD_PLUGINS`` (others may be installed)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DPO_PLUGIN_")} | {"DPO_PLUGIN_LOAD_PLUGINS": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([CLI, *args], capture_output=True, text=True, check=check, env={**clean, **env}, cwd=cwd)


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
    return json.loads(
        run_cli("plugins", "--json", PYTHONPATH=third_party, DPO_PLUGIN_LOAD_PLUGINS="listing_plugin").stdout
    )


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
    assert plugins_json["hosts"]["trl"] == {
        "name": "trl",
        "plugin": "dpo_plugin.hosts.trl.host",
        "description": (
            "TRL's ``DPOTrainer`` (``from dpo_plugin.trl import DPOConfig, DPOTrainer``; ``dpo-plugin train``)."
        ),
        "trl_versions": ">=1.14.1,<1.17",
    }
    kinds = {"plugins", "losses", "reference_strategies", "adapters", "judges", "checks", "hosts"}
    assert set(plugins_json) == kinds


def test_plugins_json_lists_an_installed_third_party_plugin(plugins_json):
    plugins = {p["name"]: p for p in plugins_json["plugins"]}
    entry = plugins["listing_plugin"]
    assert (entry["builtin"], entry["distribution"], entry["version"]) == (False, "listing-dist", "0.4.0")
    assert entry["registered"]["losses"] == ["listing_margin"]
    spec = plugins_json["losses"]["listing_margin"]
    assert spec["plugin"] == "listing_plugin" and spec["params"] == {"beta": 0.3, "margin": 1.0}
    assert spec["needs_reference"] is False and spec["description"] == "A third-party loss."


def test_plugins_table(third_party):
    lines = run_cli("plugins", PYTHONPATH=third_party, DPO_PLUGIN_LOAD_PLUGINS="listing_plugin").stdout.splitlines()
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


BROKEN_PACKAGES = {
    "boom": (
        "dpo-plugin-boom",
        "0.3.0",
        "dpo_plugin_boom",
        'raise RuntimeError("this plugin needs the cuda driver")\n',
    ),
    "typo_loss": (
        "dpo-plugin-typo",
        "0.1.0",
        "dpo_plugin_typo",
        "import dpo_plugin\n\n@dpo_plugin.hookimpl\ndef register_loss(register):\n    pass\n",
    ),
}
BROKEN = ",".join(BROKEN_PACKAGES)  # their entry points: the plugins those commands load
HOOKS = (
    "register_losses, register_reference_strategies, register_adapters, register_judges, register_checks, "
    "register_hosts, post_train"
)
BROKEN_ERROR = (
    "error: The plugin 'boom' (entry point boom = dpo_plugin_boom, from dpo-plugin-boom 0.3.0) failed to load: "
    "RuntimeError: this plugin needs the cuda driver. Fix or uninstall it (pip uninstall dpo-plugin-boom), or skip it "
    "with DPO_PLUGIN_BLOCK_PLUGINS=boom. The plugin 'typo_loss' (entry point typo_loss = dpo_plugin_typo, from "
    "dpo-plugin-typo 0.1.0) failed to load: PluginValidationError: plugin 'typo_loss' implements unknown hook "
    f"'register_loss'. Did you mean 'register_losses'? The hooks are: {HOOKS}. Fix or uninstall it (pip uninstall "
    "dpo-plugin-typo), or skip it with DPO_PLUGIN_BLOCK_PLUGINS=typo_loss."
)


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> str:
    """Two plugin packages pip-installed into a throwaway folder (on PYTHONPATH only for the commands that use it):
    one whose import raises, one whose hook is misspelled."""
    sources, site = tmp_path_factory.mktemp("broken-sources"), tmp_path_factory.mktemp("broken-site")
    for entry_point, (distribution, version, module, code) in BROKEN_PACKAGES.items():
        package = sources / module
        package.mkdir()
        (package / f"{module}.py").write_text(code)
        (package / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
            f'[project]\nname = "{distribution}"\nversion = "{version}"\n'
            f'[project.entry-points.dpo_plugin]\n{entry_point} = "{module}"\n'
            f'[tool.setuptools]\npy-modules = ["{module}"]\n'
        )
    packages = [str(sources / module) for _, _, module, _ in BROKEN_PACKAGES.values()]
    pip = [sys.executable, "-m", "pip", "-q", "install", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "--target", str(site), *packages], check=True, capture_output=True)
    return str(site)


def test_plugins_lists_the_others_marks_the_broken_ones_and_fails(broken_site):
    result = run_cli("plugins", check=False, PYTHONPATH=broken_site, DPO_PLUGIN_LOAD_PLUGINS=BROKEN)
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == BROKEN_ERROR
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in result.stdout.splitlines()[2:]}
    assert rows["dpo_plugin.loss_variants.squared"][2] == "(built-in)  losses: ipo, ipo_paper, sppo_hard, cal_dpo"
    assert rows["boom"] == ["dpo-plugin-boom", "0.3.0", "BROKEN: RuntimeError: this plugin needs the cuda driver"]
    assert rows["typo_loss"][:2] == ["dpo-plugin-typo", "0.1.0"]
    assert rows["typo_loss"][2].startswith("BROKEN: PluginValidationError: plugin 'typo_loss' implements unknown hook")
    listing = json.loads(
        run_cli("plugins", "--json", check=False, PYTHONPATH=broken_site, DPO_PLUGIN_LOAD_PLUGINS=BROKEN).stdout
    )
    plugins = {p["name"]: p for p in listing["plugins"]}
    assert plugins["boom"]["error"] == "RuntimeError: this plugin needs the cuda driver"
    assert set(BUILTIN_LOSSES) <= set(plugins) and "sigmoid" in listing["losses"]


def test_other_commands_fail_with_the_one_line_error_before_any_model_loads(broken_site, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name_or_path: {tmp_path / 'no-such-model'}\ndataset_name: {REPO / 'dpo_plugin/demo/data'}\n"
        f"output_dir: {tmp_path / 'out'}\nbf16: false\n"
    )
    for command in (["losses"], ["train", "--config", str(config)]):
        result = run_cli(*command, check=False, PYTHONPATH=broken_site, DPO_PLUGIN_LOAD_PLUGINS=BROKEN)
        assert result.returncode == 2 and result.stderr.splitlines()[-1] == BROKEN_ERROR, result.stderr[-2000:]
        assert "Traceback" not in result.stderr


def test_the_variable_the_error_names_gets_past_it(broken_site):
    result = run_cli("plugins", PYTHONPATH=broken_site, DPO_PLUGIN_LOAD_PLUGINS=BROKEN, DPO_PLUGIN_BLOCK_PLUGINS=BROKEN)
    assert "BROKEN" not in result.stdout and "boom" not in result.stdout and result.stderr == ""
