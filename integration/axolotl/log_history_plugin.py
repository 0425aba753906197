"""A test-only Axolotl plugin: at the end of training, the trainer's log history (exact floats) as JSON.

Axolotl's console prints each log rounded to four digits; the parity tests compare the losses to 1e-4.
"""

import json
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback


class _Dump(TrainerCallback):
    def on_train_end(self, args, state, control, **kwargs):
        Path(args.output_dir, "log_history.json").write_text(json.dumps(state.log_history))


class LogHistoryPlugin(BasePlugin):
    def add_callbacks_post_trainer(self, cfg, trainer):
        return [_Dump()]
