"""The source distribution (``python -m build --sdist``) holds what its tests, docs and README need, declares
the license, classifiers, URLs and the ``demo`` extra, and works unpacked: the package imports from it and a
test file passes inside it."""

from __future__ import annotations

import email.parser
import fnmatch
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: What the sdist carries beside pyproject.toml: the package, and what its tests, docs and README use.
FOLDERS = ("dpo_plugin", "docs", "tests", "integration", "benchmarks", "scripts")
FILES = ("LICENSE", "README.md", "mkdocs.yml", "setup.sh", "pyproject.toml", "MANIFEST.in")
#: Never part of a source tree: environments, caches, build outputs and runs.
NOT_SOURCE = (
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    "*.pyc",
    "*.egg-info",
    "build",
    "dist",
    "site",
    "runs",
    "outputs",
    ".whl",
)


def _source_files(root: Path) -> set[str]:
    """The files of ``FILES`` and ``FOLDERS`` under ``root``, leaving out what is no source (``NOT_SOURCE``)."""
    found = set(FILES)
    for folder in FOLDERS:
        for path in (root / folder).rglob("*"):
            parts = path.relative_to(root).parts
            if path.is_file() and not any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in NOT_SOURCE):
                found.add("/".join(parts))
    return found


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory) -> Path:
    """The sdist built from a copy of this checkout (the checkout itself stays untouched), unpacked."""
    work = tmp_path_factory.mktemp("sdist")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    command = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(work / "dist"), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (archive,) = (work / "dist").glob("dpo_plugin-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(work / "unpacked", filter="data")
    (root,) = (work / "unpacked").iterdir()
    return root


def test_the_sdist_holds_every_file_its_tests_docs_and_readme_need(unpacked):
    present = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    assert _source_files(REPO) - present == set()
    for path in (
        "docs/examples/train.py",
        "integration/example_plugin/pyproject.toml",
        "dpo_plugin/testing/tiny-model/config.json",
    ):
        assert path in present, path
    assert not [p for p in present if "__pycache__" in p or "/build/" in p]
    assert os.access(unpacked / "setup.sh", os.X_OK)
    assert (unpacked / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]


def test_the_sdist_metadata(unpacked):
    metadata = email.parser.Parser().parsestr((unpacked / "PKG-INFO").read_text())
    assert (metadata["Name"], metadata["License-Expression"], metadata["License-File"]) == (
        "dpo-plugin",
        "Apache-2.0",
        "LICENSE",
    )
    classifiers = metadata.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers and "Development Status :: 3 - Alpha" in classifiers
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues"} <= urls.keys()
    requires = metadata.get_all("Requires-Dist")
    assert {"test", "docs", "demo"} <= set(metadata.get_all("Provides-Extra"))
    assert 'gguf>=0.10; extra == "demo"' in requires and not [
        r for r in requires if r.startswith("gguf") and "extra" not in r
    ]
    assert 'build>=1.2; extra == "test"' in requires


def test_the_unpacked_sdist_imports_and_passes_a_test_file(unpacked, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    where = subprocess.run(
        [sys.executable, "-c", "import dpo_plugin; print(dpo_plugin.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    assert Path(where.stdout.strip()) == unpacked / "dpo_plugin" / "__init__.py"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_registry.py",
        "tests/test_verdicts.py",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=unpacked)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout.splitlines()[-1] and "failed" not in result.stdout.splitlines()[-1]
