"""mkdocs hook: tidies the reStructuredText roles of the docstrings in the API reference. (The pages' tables and
included files are written into the markdown by scripts/update_docs.py, so that the files read whole.)"""

from __future__ import annotations

import re

RST_ROLE = re.compile(r":(?:class|mod|func|meth|attr|data|exc|obj):<code>(~?)([^<]*)</code>")


def on_page_content(html: str, **kwargs: object) -> str:
    """The API reference's docstrings are reStructuredText-flavoured: ``:class:`~a.B``` shows as ``B``, and a
    paragraph's closing ``::`` (a literal block follows) as ``:``."""

    def role(match: re.Match[str]) -> str:
        short, target = match.groups()
        return f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"

    return RST_ROLE.sub(role, html).replace("::</p>", ":</p>")
