"""The documentation site builds with --strict, and its reference tables come from the registries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dpo_plugin

REPO = Path(__file__).resolve().parent.parent


def test_docs_build_strict_with_generated_tables(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = (tmp_path / "losses" / "index.html").read_text()
    for name in dpo_plugin.losses():
        assert f"<code>{name}</code>" in losses, name
    for kind, page in (("reference_strategies", "reference-strategies"), ("adapters", "adapters"), ("judges", "checks-and-judges"), ("checks", "checks-and-judges")):
        text = (tmp_path / page / "index.html").read_text()
        for name in getattr(dpo_plugin, kind)():
            assert f"<code>{name}</code>" in text, (kind, name)
    assert "<code>loss_params</code>" in (tmp_path / "configuration" / "index.html").read_text()
    assert not (tmp_path / "hooks.py").exists()
