"""``dpo-plugin train --host axolotl --config FILE.yml [--key value …]``: Axolotl's own training, the plugin on.

What ``axolotl train FILE.yml`` does (Axolotl's ``do_train``), with ``dpo_plugin.hosts.axolotl.DPOPlugin``
added to ``plugins:`` when the YAML does not name it, and the run's result handed back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ...errors import ConfigError
from ..base import TrainResult
from . import PLUGIN_PATH, names_the_plugin
from .host import output_dir_of


def parse_argv(argv: list[str]) -> tuple[Path, dict[str, Any]]:
    """``--config FILE [--key value …]`` → the file and the overrides (values read as YAML scalars)."""
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        raise ConfigError("dpo-plugin train --host axolotl needs --config FILE.yml (an Axolotl config).")
    index = argv.index("--config")
    config, rest = Path(argv[index + 1]), argv[:index] + argv[index + 2 :]
    if not config.is_file():
        raise ConfigError(f"Config file {str(config)!r} does not exist.")
    overrides: dict[str, Any] = {}
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--") or not rest or rest[0].startswith("--"):
            raise ConfigError(f"the command line: expected --key value pairs after --config FILE, got {flag!r}.")
        overrides[flag[2:].replace("-", "_")] = yaml.safe_load(rest.pop(0))
    return config, overrides


def with_plugin(config: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides, with the plugin added to the YAML's ``plugins:`` when it is not there."""
    plugins = overrides.get("plugins", (yaml.safe_load(config.read_text()) or {}).get("plugins")) or []
    if not names_the_plugin(plugins):
        overrides = {**overrides, "plugins": [*plugins, PLUGIN_PATH]}
    return overrides


def run_training(argv: list[str]) -> TrainResult:
    """Train as ``axolotl train`` does; the trained model is saved by Axolotl, the checks' report is the session's."""
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_preference_datasets
    from axolotl.integrations.base import PluginManager
    from axolotl.train import train

    config, overrides = parse_argv(argv)
    cfg = load_cfg(config, **with_plugin(config, overrides))
    manager = PluginManager.get_instance()
    dataset_meta = manager.load_datasets(cfg, preprocess=False)
    if dataset_meta is None:
        dataset_meta = load_preference_datasets(cfg=cfg, cli_args=TrainerCliArgs())
    try:
        _, _, trainer = train(cfg=cfg, dataset_meta=dataset_meta)
    finally:
        manager.post_train_unload(cfg)
    summary = next((e for e in reversed(trainer.state.log_history) if "train_runtime" in e), {})
    session = trainer.session
    return TrainResult(
        output_dir_of(cfg),
        dict(summary),
        session.check_report,
        main_process=trainer.is_world_process_zero(),
        strict_checks=session.settings.strict_checks,
    )
