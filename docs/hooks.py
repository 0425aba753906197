"""mkdocs hook: replaces ``<!-- registry:KIND -->``, ``<!-- config-fields -->`` and ``<!-- metrics -->`` with
tables generated from the live registries, DPOConfig and the metric explanations, so the reference pages
cannot drift from the code; tidies the reStructuredText roles of the docstrings in the API reference."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"<!-- (registry:[a-z_]+|config-fields|metrics) -->")


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
    for name, spec in sorted(dpo_plugin.losses().items()):
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
    for name, spec in sorted(dpo_plugin.adapters().items()):
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
    rows += [_simple_row(name, spec) for name, spec in sorted(registry.items())]
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


RST_ROLE = re.compile(r":(?:class|mod|func|meth|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def on_page_content(html: str, **kwargs: object) -> str:
    """The API reference's docstrings are reStructuredText-flavoured: ``:class:`~a.B``` shows as ``B``, and a
    paragraph's closing ``::`` (a literal block follows) as ``:``."""

    def role(match: re.Match[str]) -> str:
        short, target = match.groups()
        return f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"

    return RST_ROLE.sub(role, html).replace("::</p>", ":</p>")


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "config-fields":
            return _config_fields()
        if key == "metrics":
            return _metrics()
        kind = key.split(":", 1)[1]
        if kind == "losses":
            return _losses()
        return _adapters() if kind == "adapters" else _simple(kind)

    return PLACEHOLDER.sub(replace, markdown)
