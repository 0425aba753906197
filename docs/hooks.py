"""mkdocs hook: replaces ``<!-- registry:KIND -->`` and ``<!-- config-fields -->`` with tables generated
from the live registries and DPOConfig, so the reference pages cannot drift from the code."""

from __future__ import annotations

import dataclasses
import inspect
import re

PLACEHOLDER = re.compile(r"<!-- (registry:[a-z_]+|config-fields) -->")


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _losses() -> str:
    import dpo_plugin

    rows = ["| loss | reference | parameters (defaults) | formula and paper |", "|---|---|---|---|"]
    for name, spec in sorted(dpo_plugin.losses().items()):
        params = ", ".join(f"`{k}={v!r}`" for k, v in spec.to_dict()["params"].items()) or "-"
        doc = " ".join((inspect.getdoc(spec.obj) or "").split("\n\n")[0].split())
        flags = "needed" if spec.needs_reference else "no"
        if spec.batch_coupled:
            flags += ", batch-coupled"
        rows.append(f"| `{name}` | {flags} | {params} | {_cell(doc)} |")
    return "\n".join(rows)


def _simple(kind: str) -> str:
    import dpo_plugin

    registry = getattr(dpo_plugin, kind)()
    rows = ["| name | description | options |", "|---|---|---|"]
    for name, spec in sorted(registry.items()):
        target = getattr(spec, "settings", None) or spec.obj
        try:
            parameters = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
            options = ", ".join(
                f"`{p.name}={p.default!r}`" for p in parameters.values()
                if p.name not in ("self", "ctx") and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not p.empty
            )  # fmt: skip
        except (TypeError, ValueError):
            options = ""
        description = spec.description or " ".join((inspect.getdoc(spec.obj) or "").split("\n\n")[0].split())
        rows.append(f"| `{name}` | {_cell(description)} | {options or '-'} |")
    return "\n".join(rows)


def _config_fields() -> str:
    import trl

    from dpo_plugin.trl import DPOConfig

    trl_fields = {f.name for f in dataclasses.fields(trl.DPOConfig)}
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(DPOConfig):
        if f.name in trl_fields or not f.init:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append(f"| `{f.name}` | `{default!r}` | {_cell(f.metadata.get('help', ''))} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "config-fields":
            return _config_fields()
        kind = key.split(":", 1)[1]
        return _losses() if kind == "losses" else _simple(kind)

    return PLACEHOLDER.sub(replace, markdown)
