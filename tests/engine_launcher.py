"""Test-only launcher of ``dpo-plugin`` under an engine: FSDP2 on CPU processes, and each process's peak memory.

accelerate runs FSDP on GPUs only: on CPU processes it quietly runs DDP (``MULTI_CPU``) whatever its
config says. When launched with an FSDP config (``accelerate launch --config_file
docs/examples/accelerate/fsdp2.yaml``), this fixture — and nothing in the package — makes accelerate's
state take the FSDP path it was configured for, so torch's ``fully_shard`` shards the models over gloo
as it would over NCCL (``ENGINE_FSDP_ON_CPU=0``: accelerate as it is). At exit each process writes its
peak RSS (``VmHWM``, KiB) to ``$ENGINE_RSS_DIR/rank-<RANK>`` when that is set; a process still running
after ``$ENGINE_STACKS_AFTER`` seconds prints every thread's stack and exits (a hung collective shows
where). Used by tests/test_engines.py and benchmarks/engine_matrix.py through tests/engine_runs.py.
"""

from __future__ import annotations

import atexit
import faulthandler
import os
import sys
from pathlib import Path

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def _record_peak_rss() -> None:
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    Path(os.environ["ENGINE_RSS_DIR"], f"rank-{os.environ.get('RANK', '0')}").write_text(peak)


if __name__ == "__main__":
    if os.environ.get("ENGINE_FSDP_ON_CPU", "1") == "1":
        AcceleratorState.__init__ = _fsdp_on_cpu
    if os.environ.get("ENGINE_STACKS_AFTER"):
        faulthandler.dump_traceback_later(float(os.environ["ENGINE_STACKS_AFTER"]), exit=True)
    if os.environ.get("ENGINE_RSS_DIR"):
        atexit.register(_record_peak_rss)
    from dpo_plugin.cli import main

    sys.exit(main())
