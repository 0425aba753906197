"""The run's output folder: what a run may write there, and the record of what it wrote.

A run writes only into an empty folder, a folder of an earlier run of this package that it is
resuming, or a folder the user allowed to be reused (``reuse_output_dir: true``); and never
overwrites or deletes a file it did not write. The folder's :data:`MANIFEST` lists the top-level
entries this package's runs wrote there; anything else is the user's. A user's entry whose name a
run writes (a model file, ``README.md``, ``checkpoint-*`` — which checkpoint rotation would delete)
is refused in every case, with the names, before anything loads.

Every write is listed before it happens: a checkpoint before its files are written; a save into the
folder itself goes to :data:`STAGING` (listed first), whose entries :func:`move_in` then lists and
moves in one by one. So a write cut short (a full disk, a kill) leaves only entries the manifest
names, and the next run, resuming or reusing the folder, accepts it. ``dpo-plugin evaluate`` writes its
report by the same rules (:func:`check_report_folder`). The lock file of :mod:`dpo_plugin.run_lock` is
not an entry.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .errors import ConfigError
from .run_lock import LOCK_FILE

MANIFEST = "dpo_plugin_run.json"
#: Where a save into the output folder is written first (listed in the manifest), then moved in name by name.
STAGING = ".dpo_plugin_saving"
#: Top-level names a training run may write (model, tokenizer, trainer files, checkpoints, reports).
WRITTEN_NAMES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.*",
    "merges.txt",
    "training_args.bin",
    "trainer_state.json",
    "README.md",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "checkpoint-*",
    "eval",
    "merged",
    "adapter_init",
    "runs",
)


def entries(folder: str | Path) -> set[str]:
    """The top-level names in ``folder`` (none when it does not exist)."""
    folder = Path(folder)
    return set(os.listdir(folder)) - {MANIFEST, LOCK_FILE} if folder.is_dir() else set()


def written(folder: str | Path) -> set[str]:
    """The entries of ``folder`` that this package's runs wrote, from its manifest."""
    try:
        return set(json.loads((Path(folder) / MANIFEST).read_text())["written"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _collisions(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if any(fnmatch.fnmatch(n, pattern) for pattern in WRITTEN_NAMES))


def check_output_dir(
    folder: str | Path, *, resuming: bool, reuse: bool, strict: bool, run_wrote: Iterable[str] = ()
) -> set[str]:
    """Refuse a folder the run could harm; return the user's entries there (the run never claims them).

    ``run_wrote``: entries this run (or its host: Axolotl saves the tokenizer and config before training)
    wrote since it started, which are its own even before the manifest lists them.

    ``strict`` (``dpo-plugin train``): also refuse a non-empty folder that is not an earlier run
    being resumed, unless ``reuse``. Without ``strict`` (the Python API, as TRL's) only an entry
    the run would overwrite or delete is refused. Resuming a run takes over the entries it writes
    (its checkpoints, its model files), also a run of TRL's or of an older dpo-plugin.
    """
    present, ours = entries(folder), written(folder) | set(run_wrote)
    if resuming:
        ours |= set(_collisions(present))
    users = present - ours
    clashing = _collisions(users)
    if clashing:
        shown = ", ".join(clashing[:6]) + (", …" if len(clashing) > 6 else "")
        raise ConfigError(
            f"output_dir {str(folder)!r} holds {shown}, which this run did not write and would overwrite (or delete, "
            "for a checkpoint-* folder): move them away or choose another output_dir. Nothing was changed."
        )
    if strict and ours & present and not (resuming or reuse):
        raise ConfigError(
            f"output_dir {str(folder)!r} already holds an earlier run ({', '.join(sorted(ours & present)[:6])}), which "
            "training would overwrite. Continue it with --resume_from_checkpoint (or --resume_from_checkpoint true "
            "for its newest checkpoint), choose another --output_dir, or set reuse_output_dir: true."
        )
    if strict and users and not (ours & present) and not reuse:
        shown = ", ".join(sorted(users)[:6])
        raise ConfigError(
            f"output_dir {str(folder)!r} is not empty ({shown}) and is not a run of dpo-plugin: choose an empty "
            "folder, or set reuse_output_dir: true to write beside those files (they are never changed)."
        )
    return users


def check_report_folder(folder: str | Path, *, reuse: bool) -> set[str]:
    """``dpo-plugin evaluate``'s rules, those of training for a report: it writes ``<folder>/eval/`` only into an
    empty folder or a run of this package without a report, unless ``reuse`` (then beside the user's files, or
    replacing its own earlier report); a user's ``eval`` is never replaced. Returns the user's entries."""
    present, ours = entries(folder), written(folder)
    users = present - ours
    if "eval" in users:
        raise ConfigError(
            f"--output_dir {str(folder)!r} holds eval, which dpo-plugin did not write and the report would overwrite: "
            "move it away or choose another --output_dir. Nothing was changed."
        )
    if "eval" in present and not reuse:
        raise ConfigError(
            f"--output_dir {str(folder)!r} already holds a report (eval/), which this evaluation would replace: "
            "choose another --output_dir, or pass --reuse_output_dir to replace it."
        )
    if users and not (ours & present) and not reuse:
        raise ConfigError(
            f"--output_dir {str(folder)!r} is not empty ({', '.join(sorted(users)[:6])}) and is not a run of "
            "dpo-plugin: choose an empty folder, or pass --reuse_output_dir to write eval/ beside those files (they "
            "are never changed)."
        )
    return users


def record(folder: str | Path, users: set[str], planned: Iterable[str] = ()) -> None:
    """List every entry of ``folder`` but the user's in its manifest (atomically), and ``planned`` ones about to be
    written (a checkpoint is listed before its files, so a kill while saving leaves it known as the run's)."""
    folder = Path(folder)
    if not folder.is_dir() and not planned:
        return
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted((entries(folder) - users) | set(planned))
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"written": names}, indent=1) + "\n")
    os.replace(tmp, folder / MANIFEST)


def move_in(folder: str | Path, staging: str | Path, users: set[str]) -> list[str]:
    """Move every entry of ``staging`` into ``folder``, each listed in the manifest before it moves; an entry of
    the run's own of the same name is replaced, a user's entry never (a ConfigError). Returns the names moved."""
    folder, staging = Path(folder), Path(staging)
    names = sorted(os.listdir(staging))
    clashing = sorted(set(names) & users & set(os.listdir(folder)))
    if clashing:
        raise ConfigError(
            f"output_dir {str(folder)!r} holds {', '.join(clashing)}, which this run did not write and will not "
            f"overwrite; the saved files are in {staging}: move them yourself."
        )
    record(folder, users, planned=names)
    for name in names:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    staging.rmdir()
    record(folder, users)
    return names


def clear_staging(staging: str | Path) -> None:
    """An empty staging folder (what a failed save left there is the run's own, listed in the manifest)."""
    staging = Path(staging)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
