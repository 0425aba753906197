"""The command's help: written for users; ``train --help`` short (the plugin fields, the registered losses, the
most used TRL keys) with every TRL key behind ``--help-all``; every flag has help; flags in TRL's underscore
spelling, the hyphen spelling accepted too."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from test_cli_listing import run_cli

import dpo_plugin
from dpo_plugin.cli import build_parser
from dpo_plugin.hosts.trl.train_args import _field_types, parse_train_args
from dpo_plugin.hosts.trl.train_help import COMMON_TRL_KEYS, plugin_fields

TINY_YAML = str(Path(dpo_plugin.__file__).parent / "testing" / "tiny.yaml")
USAGE = "usage: dpo-plugin train --config FILE.yaml [--key value …]"


def _words(text: str) -> str:
    return " ".join(text.split())


def test_top_level_help_is_for_users():
    out = _words(run_cli("--help").stdout)
    assert "Direct Preference Optimization on Hugging Face TRL's DPOTrainer, with pluggable losses" in out
    assert "Start with `dpo-plugin demo`" in out and "prints" not in out  # not the module's developer docstring
    for command in ("plugins", "losses", "train", "demo", "evaluate", "check-data"):
        assert f" {command} " in out, command


def _option_line(lines: list[str], name: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(f"  --{name} "))


def test_train_help_is_short_plugin_fields_first_then_losses_and_common_trl_keys():
    out = run_cli("train", "--help", COLUMNS="100").stdout
    lines = out.splitlines()
    assert lines[0] == USAGE and len(lines) < 110  # TRL's parser prints 968 lines
    fields = plugin_fields()
    assert [f.name for f in fields][:3] == ["loss_params", "reference", "reference_params"] and len(fields) == 19
    positions = [_option_line(lines, f.name) for f in fields]
    assert positions == sorted(positions)  # in DPOConfig's order
    text = _words(out)
    for f in fields:
        assert _words(f.metadata["help"])[:30] in text, f.name  # each with its own help
    trl_positions = [_option_line(lines, name) for name in COMMON_TRL_KEYS]
    assert max(positions) < min(trl_positions)  # the plugin fields come first
    assert "--loss_type NAME [NAME …]" in out and "--model_name_or_path" in out and "--lora_dropout" not in out
    listed = re.search(r"shows their parameters\): (.*?) --help-all", text).group(1)
    assert listed.split(", ") == list(dpo_plugin.losses())  # the registered losses, not TRL's 15
    assert "Possible values are" not in text


def test_train_help_all_lists_every_trl_key():
    lines = run_cli("train", "--help-all", COLUMNS="100").stdout.splitlines()
    assert lines[0].startswith("usage: dpo-plugin train --config FILE.yaml") and len(lines) > 500
    options = {line.split()[0].rstrip(",") for line in lines if line.startswith("  --")}
    every_key = _field_types()  # TRL's ScriptArguments, DPOConfig, ModelConfig, DatasetMixtureConfig and ours
    assert {"lora_r", "datasets", "ref_model_sync_steps", "packing", "nonfinite"} <= every_key.keys()
    assert {f"--{name}" for name in every_key} <= options


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_flag_has_help_in_trl_spelling():
    for command, parser in _subcommands().items():
        shown = set()
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:  # the hidden hyphen spelling of a shown option
                (option,) = action.option_strings
                assert "-" in option[2:], (command, option)
                assert "--" + option[2:].replace("-", "_") in shown, (command, option)
                continue
            assert action.help, (command, action.option_strings)
            assert all("-" not in option[2:] for option in action.option_strings), (command, action.option_strings)
            shown |= set(action.option_strings)


def test_hyphen_and_underscore_spellings_are_the_same_flag():
    parser = build_parser()
    base = ["evaluate", "--model", "m", "--data", "d"]
    underscore, _ = parser.parse_known_args(base + ["--output_dir", "o", "--max_length", "7", "--judge_params", "{}"])
    hyphen, _ = parser.parse_known_args(base + ["--output-dir", "o", "--max-length", "7", "--judge-params", "{}"])
    assert vars(underscore) == vars(hyphen)
    assert (hyphen.output_dir, hyphen.max_length, hyphen.judge_params, hyphen.batch_size) == ("o", 7, "{}", 8)
    defaults, _ = parser.parse_known_args(base)
    assert (defaults.output_dir, defaults.max_length, defaults.base) == ("dpo-eval", 1024, None)
    for flag in ("--output_dir", "--output-dir"):
        demo, rest = parser.parse_known_args(["demo", flag, "runs/x", "--max_steps", "4"])
        assert demo.output_dir == "runs/x" and rest == ["--max_steps", "4"]
    check, _ = parser.parse_known_args(["check-data", "--data", "d", "--truncation-mode", "keep_end"])
    assert check.truncation_mode == "keep_end" and check.max_length == 1024
    for flag in ("--max_steps", "--max-steps"):
        assert parse_train_args(["--config", TINY_YAML, flag, "3"]).config.max_steps == 3
