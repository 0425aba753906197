"""Where dpo_plugin keeps what it computes once and reuses: converted models, reference log-probs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$DPO_PLUGIN_CACHE``, else ``~/.cache/dpo_plugin`` (``~`` expanded in both)."""
    return Path(os.environ.get("DPO_PLUGIN_CACHE") or Path.home() / ".cache" / "dpo_plugin").expanduser()
