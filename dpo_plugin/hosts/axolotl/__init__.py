"""The Axolotl host: ``plugins: [dpo_plugin.hosts.axolotl.DPOPlugin]`` in an Axolotl YAML with ``rl: dpo``.

- :mod:`.plugin`: the Axolotl ``BasePlugin`` (its YAML keys, the raw config's checks, our trainer chosen);
- :mod:`.keys`: the plugin keys Axolotl's schema takes, and the plugin settings read from a config;
- :mod:`.trainer`: Axolotl's DPO trainer (its optimizer, scheduler and distributed mixins kept) running a session;
- :mod:`.host`: the host registered as ``axolotl`` (``dpo-plugin train --host axolotl --config FILE``).

Importing this package does not import Axolotl; ``DPOPlugin`` does (Axolotl loads it by that dotted name).
"""

from __future__ import annotations

from typing import Any

PLUGIN_PATH = "dpo_plugin.hosts.axolotl.DPOPlugin"
#: The names Axolotl may know the plugin by (``module:Class`` is normalised to ``module.Class``).
PLUGIN_NAMES = {PLUGIN_PATH, "dpo_plugin.hosts.axolotl.plugin.DPOPlugin"}


def names_the_plugin(plugins: Any) -> bool:
    """Whether an Axolotl ``plugins:`` list names this package's plugin."""
    return any(str(name).replace(":", ".") in PLUGIN_NAMES for name in plugins or ())


def __getattr__(name: str) -> Any:
    if name == "DPOPlugin":  # imports Axolotl
        from .plugin import DPOPlugin

        return DPOPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
