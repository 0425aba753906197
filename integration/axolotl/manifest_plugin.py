"""A test-only Axolotl plugin: the output folder's manifest as it stands when Axolotl's final save begins.

Axolotl calls ``post_train`` twice: first right after ``trainer.train()``, before it saves the trained model
itself; this plugin copies the manifest then (beside the output folder, as ``<name>.manifest-before-save.json``)
and notes whether the model file was there yet.
"""

import json
from pathlib import Path

from axolotl.integrations.base import BasePlugin


class ManifestBeforeSavePlugin(BasePlugin):
    def post_train(self, cfg, model):
        folder = Path(cfg.output_dir)
        copy = folder.parent / f"{folder.name}.manifest-before-save.json"
        if not copy.exists():
            manifest = json.loads((folder / "dpo_plugin_run.json").read_text())
            copy.write_text(json.dumps({**manifest, "model_saved": (folder / "model.safetensors").exists()}))
