"""Shared fixtures: tiny models and tokenizers built from configs, and a plugin registered for one test."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# caches the tests write (reference log-probs) go to a folder of this session, never the user's ~/.cache
os.environ["DPO_PLUGIN_CACHE"] = tempfile.mkdtemp(prefix="dpo-plugin-test-cache-")
# the suite sees the built-ins only, whatever else is installed: a test that installs a plugin loads it by name
os.environ["DPO_PLUGIN_LOAD_PLUGINS"] = ""

import pytest  # noqa: E402

from dpo_plugin.plugins import get_plugin_manager, reset_plugin_manager  # noqa: E402
from dpo_plugin.testing.tiny import tiny_model, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level tokenizer with pad/eos tokens and a chat template (shared; do not mutate)."""
    return tiny_tokenizer()


@pytest.fixture
def make_model(tokenizer):
    """Factory of tiny Llama causal LMs: ``make_model(seed=0)``."""

    def make(seed: int = 0, **kwargs):
        return tiny_model(len(tokenizer), seed=seed, **kwargs)

    return make


@pytest.fixture
def register_plugin():
    """Register plugin objects in the process-wide manager for one test: ``register_plugin(obj, name)``."""
    pm = get_plugin_manager()
    registered = []

    def register(plugin, name=None):
        pm.register(plugin, name=name)
        registered.append(plugin)
        return plugin

    yield register
    for plugin in registered:
        if pm.is_registered(plugin):
            pm.unregister(plugin)


@pytest.fixture
def fresh_plugin_manager(monkeypatch):
    """Rebuild the process-wide manager after the test changed the DPO_PLUGIN_* environment."""
    reset_plugin_manager()
    yield get_plugin_manager
    reset_plugin_manager()
