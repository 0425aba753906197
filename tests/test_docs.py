"""The documentation site builds with --strict, and its reference tables come from the registries."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dpo_plugin

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = ("example_plugin", "example_judge", "example_check")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(  # the hooks and the API reference read this checkout's package
        [str(mkdocs), "build", "--strict", "--site-dir", str(site_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return site_dir


def _page(site: Path, page: str) -> str:
    return (site / page / "index.html").read_text()


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows whose first cell is ``<code>name</code>``: name → the cells' HTML."""
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", text, re.S):
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        match = re.fullmatch(r"<code>([^<]+)</code>", cells[0].strip()) if cells else None
        if match:
            rows[match.group(1)] = cells
    return rows


def test_docs_build_strict_with_generated_tables(site):
    losses = _page(site, "losses")
    for name in dpo_plugin.losses():
        assert f"<code>{name}</code>" in losses, name
    for kind, page in (
        ("reference_strategies", "reference-strategies"),
        ("adapters", "adapters"),
        ("judges", "checks-and-judges"),
        ("checks", "checks-and-judges"),
    ):
        text = _page(site, page)
        for name in getattr(dpo_plugin, kind)():
            assert f"<code>{name}</code>" in text, (kind, name)
    assert "<code>loss_params</code>" in _page(site, "configuration")
    assert not (site / "hooks.py").exists()


def test_every_loss_row_has_its_formula_and_paper(site):
    rows = _rows(_page(site, "losses"))
    for name in dpo_plugin.losses():
        reference, params, formula, paper = rows[name][1:]
        assert re.search(r"<code>[^<]*[σ²()=][^<]*</code>", formula), (name, formula)
        assert re.search(r'<a href="https://(arxiv\.org/abs/\d{4}\.\d{4,5}|[^"]+\.pdf)">', paper), (name, paper)
        assert re.search(r"\b20\d\d\b", paper), (name, paper)  # authors, year, title
    # the notation the formulas use is defined once on the page
    for symbol in ("r_w", "s_w", "u_w", "Δ", "β", "σ", "ε", "z", "NLL(y_w)"):
        assert f"<td><code>{symbol}" in losses_notation(site), symbol
    # a pipe inside a formula is not escaped in the rendered code
    assert "<code>(s_w/|y_w| − s_l/|y_l| − 1/(2β))²</code>" in rows["ipo"][3]


def losses_notation(site: Path) -> str:
    text = _page(site, "losses")
    return text[text.index('id="notation"') : text.index('id="the-losses"')]


def test_every_adapter_lists_its_options_with_defaults(site):
    rows = _rows(_page(site, "adapters"))
    for name, spec in dpo_plugin.adapters().items():
        options = rows[name][2]
        for key, param in spec.obj.params.items():
            assert f"<code>{html.escape(f'{key}={param.default!r}', quote=False)}</code>" in options, (
                name,
                key,
                options,
            )
    assert "<code>r=16</code>" in rows["lora"][2] and "<code>target_modules='all-linear'</code>" in rows["lora"][2]


def test_plugin_examples_are_the_packages_files(site):
    """The writing-plugins page includes the example packages' files themselves (snippets), so they cannot drift."""
    text = html.unescape(re.sub(r"<[^>]+>", "", _page(site, "writing-plugins")))
    assert "--8<--" not in text
    for example in EXAMPLES:
        for path in sorted((REPO / "integration" / example).glob("*.py")) + [
            REPO / "integration" / example / "pyproject.toml"
        ]:
            for line in path.read_text().splitlines():
                assert line.strip() in text, (path.name, line)
    assert "needs_reference=True" in text


def test_the_metric_table_is_the_reports_explanations(site):
    """docs' metric table and report.md's explanations come from one table in the code."""
    from dpo_plugin.evaluation.metric_help import METRIC_HELP

    text = _page(site, "checks-and-judges")
    rows = re.findall(r"<tr>\s*<td>(\w+)</td>\s*<td><code>(\w+)</code></td>\s*<td>(.*?)</td>\s*</tr>", text, re.S)
    shown = {(check, metric): html.unescape(re.sub(r"<[^>]+>", "", meaning)) for check, metric, meaning in rows}
    assert shown == {
        (check, metric): meaning for check, table in METRIC_HELP.items() for metric, meaning in table.items()
    }


def _text(site: Path, page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", _page(site, page)))


def test_python_api_page_shows_the_tested_examples(site):
    """The Python API page includes docs/examples/*.py as they are (tests/test_python_api.py runs them)."""
    text = _text(site, "python-api")
    assert "--8<--" not in text
    examples = sorted((REPO / "docs" / "examples").glob("*.py"))
    assert [p.name for p in examples] == ["runtime_plugin.py", "train.py", "verdicts.py"]
    for path in examples:
        for line in path.read_text().splitlines():
            assert line.strip() in text, (path.name, line)
    assert not (site / "examples").exists()  # included in the page, not published beside it


def test_api_reference_documents_the_public_contract(site):
    text = _text(site, "api")
    for name in (
        "get_plugin_manager",
        "hookimpl",
        "losses",
        "reference_strategies",
        "adapters",
        "judges",
        "checks",
        "register_losses",
        "register_checks",
        "post_train",
        "PairLogps",
        "LossOutput",
        "CheckResult",
        "dpo_plugin.trl.DPOConfig",
        "dpo_plugin.trl.DPOTrainer",
        "win_rate_verdict",
        "margin_verdict",
        "length_controlled_verdict",
        "degeneration_verdict",
        "ConfigError",
    ):
        assert re.search(rf"(^|\s){re.escape(name)}\s", text, re.M), name
    # the signatures, as the contract states them (line breaks depend on whether a formatter is installed)
    flat = re.sub(r"\s+", "", text)
    assert "win_rate_verdict(policy_first:Sequence[Any],policy_second:Sequence[Any],*,threshold" in flat
    assert "length_controlled_verdict(policy_first:Sequence[Any],policy_second:Sequence[Any],policy_lengths" in flat
    assert not re.search(r":(class|mod|func|attr|meth):", text)  # reStructuredText roles are tidied


def test_coming_from_trl_lists_the_keys_that_differ(site):
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", _page(site, "coming-from-trl"), re.S):
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        if cells:
            rows[html.unescape(re.sub(r"<[^>]+>", "", cells[0]))] = cells
    keys = " ".join(rows)
    for key in (
        "loss_type",
        "loss_weights",
        "label_smoothing",
        "use_weighting",
        "precompute_ref_log_probs",
        "sync_ref_model",
        "ref_model",
        "padding_free",
        "use_peft",
        "output_dir",
        "resume_from_checkpoint",
        "unknown keys",
        "dataset_name",
    ):
        assert key in keys, key
    assert all(len(cells) == 4 for cells in rows.values())  # key, TRL, ours, why


def test_wide_tables_break_code_only_at_spaces(site):
    css = (site / "extra.css").read_text()
    assert re.search(r"table:not\(\[class\]\) code \{\s*word-break: normal;\s*overflow-wrap: normal;", css)
    assert 'href="../extra.css"' in _page(site, "losses")


def _update_docs():
    """scripts/update_docs.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_docs", REPO / "scripts" / "update_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_parts_of_the_pages_are_written_and_current():
    """The tables and the included files are in the markdown itself (a page reads whole as a file on a code host),
    and equal what the code and the files give now: run scripts/update_docs.py after changing them."""
    update = _update_docs()
    stale = [page.name for page in update.pages() if update.refresh(page.read_text()) != page.read_text()]
    assert stale == [], "run: python scripts/update_docs.py"
    for page in update.pages():
        text = page.read_text()
        assert "--8<--" not in text and not re.search(r"<!-- (registry:[a-z_]+|config-fields|metrics) -->", text)
    losses = (REPO / "docs" / "losses.md").read_text()
    assert all(f"| `{name}` |" in losses for name in dpo_plugin.losses())
    assert (REPO / "docs" / "examples" / "train.py").read_text() in (REPO / "docs" / "python-api.md").read_text()


def test_a_third_party_plugin_is_not_in_the_built_in_tables(register_plugin):
    """A loss installed beside the package (here registered at runtime) is not the package's to document."""

    class Plugin:
        @staticmethod
        @dpo_plugin.hookimpl
        def register_losses(register):
            def extra_loss(logps, *, beta: float = 0.1):
                """Some third-party loss: `(β·Δ)²`."""

            register("extra_loss", extra_loss)

    register_plugin(Plugin, "third-party")
    assert "extra_loss" in dpo_plugin.losses()
    assert "extra_loss" not in _update_docs().generated("registry:losses")
