"""Write the generated parts of the docs into the markdown files, so that a page reads whole as a file (on a code
host, in an editor) and not only as the built site.

A generated part sits between ``<!-- generated from SOURCE by scripts/update_docs.py … -->`` and
``<!-- end of generated part -->``. SOURCE is ``registry:KIND`` (the built-in losses, reference strategies,
adapters, judges or checks; third-party plugins installed beside the package are left out), ``config-fields``
(the plugin fields of ``DPOConfig``), ``metrics`` (the checks' metric explanations) or a file of the repository
(shown as a code block). Run ``python scripts/update_docs.py`` after changing any of them;
``tests/test_docs.py`` fails while a page is not current.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(
    r"(?P<head><!-- generated from (?P<source>\S+) by scripts/update_docs\.py[^\n]*-->\n\n)(?P<body>.*?)"
    r"(?P<tail>\n\n<!-- end of generated part -->)",
    re.S,
)
LANGUAGES = {".py": "python", ".toml": "toml", ".yaml": "yaml", ".json": "json"}


CODE_SPAN = re.compile(r"(``.+?``|`[^`]+`)")


def _cell(text: object) -> str:
    """``text`` as one table cell: one line, pipes escaped outside code spans (inside them a pipe does not split)."""
    parts = CODE_SPAN.split(str(text).replace("\n", " "))
    return "".join(part if CODE_SPAN.fullmatch(part) else part.replace("|", "\\|") for part in parts)


ARXIV = re.compile(r"arXiv:(\d{4}\.\d{4,5})")
URL = re.compile(r"https?://[^\s<>()]*[^\s<>().,;:]")


def _paragraphs(obj: object) -> list[str]:
    """The docstring's paragraphs, each on one line."""
    return [" ".join(p.split()) for p in (inspect.getdoc(obj) or "").split("\n\n") if p.strip()]


def _links(text: str) -> str:
    """Bare URLs as autolinks and ``arXiv:NNNN.NNNNN`` as links to the abstract page."""
    text = URL.sub(lambda m: f"<{m.group(0)}>", text)
    return ARXIV.sub(r"[arXiv:\1](https://arxiv.org/abs/\1)", text)


def loss_doc(obj: object) -> tuple[str, str, str]:
    """``(formula, paper, notes)`` from a loss's docstring.

    The convention of the built-in losses: the first paragraph names the loss and gives its formula
    in ``code``; the first later paragraph with an arXiv id or a URL is the citation (authors, year,
    title, link); the remaining paragraphs are notes. A part that is missing is ``""``.
    """
    paragraphs = _paragraphs(obj)
    formula = paragraphs[0] if paragraphs else ""
    paper = next((p for p in paragraphs[1:] if ARXIV.search(p) or URL.search(p)), "")
    notes = " ".join(p for p in paragraphs[1:] if p != paper)
    return formula, paper, notes


def _losses() -> str:
    import dpo_plugin

    rows = ["| loss | reference | parameters (defaults) | formula | paper |", "|---|---|---|---|---|"]
    for name, spec in _builtin(dpo_plugin.losses()):
        params = ", ".join(f"`{k}={v!r}`" for k, v in spec.to_dict()["params"].items()) or "-"
        formula, paper, notes = loss_doc(spec.obj)
        flags = "needed" if spec.needs_reference else "no"
        if spec.batch_coupled:
            flags += ", batch-coupled"
        described = _cell(formula or "-") + (f"<br>{_cell(notes)}" if notes else "")
        rows.append(f"| `{name}` | {flags} | {params} | {described} | {_links(_cell(paper)) or '-'} |")
    return "\n".join(rows)


def _adapters() -> str:
    """Adapter recipes with their ``adapter_params`` (a recipe's ``params``: name → Param with a default)."""
    import dpo_plugin

    rows = ["| adapter | description | `adapter_params` (defaults) |", "|---|---|---|"]
    for name, spec in _builtin(dpo_plugin.adapters()):
        params = getattr(spec.obj, "params", None)
        if not isinstance(params, Mapping):
            rows.append(_simple_row(name, spec))
            continue
        options = ", ".join(f"`{key}={getattr(param, 'default', param)!r}`" for key, param in params.items())
        paragraphs = _paragraphs(spec.obj) or [spec.description]
        if getattr(spec.obj, "changes_base_weights", False):
            paragraphs.append("Rewrites the base weights at initialisation: the reference is a frozen copy.")
        description = "<br>".join(_cell(p) for p in paragraphs)
        rows.append(f"| `{name}` | {_links(description)} | {options or '-'} |")
    return "\n".join(rows)


def _simple_row(name: str, spec: object) -> str:
    target = getattr(spec, "settings", None) or spec.obj
    try:
        parameters = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
        options = ", ".join(
            f"`{p.name}={p.default!r}`"
            for p in parameters.values()
            if p.name not in ("self", "ctx")
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.default is not p.empty
        )
    except (TypeError, ValueError):
        options = ""
    description = spec.description or " ".join((inspect.getdoc(spec.obj) or "").split("\n\n")[0].split())
    return f"| `{name}` | {_cell(description)} | {options or '-'} |"


def _simple(kind: str) -> str:
    import dpo_plugin

    registry = getattr(dpo_plugin, kind)()
    rows = ["| name | description | options |", "|---|---|---|"]
    rows += [_simple_row(name, spec) for name, spec in _builtin(registry)]
    return "\n".join(rows)


def _config_fields() -> str:
    from dpo_plugin.hosts.trl.train_help import field_default, plugin_fields

    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in plugin_fields():
        rows.append(f"| `{f.name}` | `{field_default(f)!r}` | {_cell(f.metadata.get('help', ''))} |")
    return "\n".join(rows)


def _metrics() -> str:
    from dpo_plugin.evaluation.metric_help import METRIC_HELP

    rows = ["| check | metric | meaning |", "|---|---|---|"]
    for check, table in METRIC_HELP.items():
        rows += [f"| {check} | `{metric}` | {_cell(meaning)} |" for metric, meaning in table.items()]
    return "\n".join(rows)


def _builtin(registry: Mapping[str, object]) -> list[tuple[str, object]]:
    """The registry's built-in items, by name (a third-party plugin's are not the package's to document)."""
    return sorted((name, spec) for name, spec in registry.items() if spec.plugin.startswith("dpo_plugin."))


def _file(path: str) -> str:
    text = (REPO / path).read_text()
    return f'```{LANGUAGES[Path(path).suffix]} title="{path}"\n{text}```'


def generated(source: str) -> str:
    """The markdown of one generated part."""
    if source == "config-fields":
        return _config_fields()
    if source == "metrics":
        return _metrics()
    if source.startswith("registry:"):
        kind = source.split(":", 1)[1]
        if kind == "losses":
            return _losses()
        return _adapters() if kind == "adapters" else _simple(kind)
    return _file(source)


def refresh(markdown: str) -> str:
    """``markdown`` with every generated part written anew."""
    return BLOCK.sub(lambda m: m["head"] + generated(m["source"]) + m["tail"], markdown)


def pages() -> list[Path]:
    return sorted((REPO / "docs").glob("*.md"))


def main() -> int:
    for page in pages():
        text = page.read_text()
        if refresh(text) != text:
            page.write_text(refresh(text))
            print(f"updated {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
