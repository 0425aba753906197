"""``python -m dpo_plugin`` is the ``dpo-plugin`` command (also for ``accelerate launch -m dpo_plugin``)."""

import sys

from .cli import main

sys.exit(main())
