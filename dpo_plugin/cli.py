"""The ``dpo-plugin`` command. The only module that prints; nothing imports it."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from . import __version__
from .errors import DpoPluginError
from .plugins import KINDS, get_plugin_manager

DESCRIPTION = (
    "Direct Preference Optimization on Hugging Face TRL's DPOTrainer, with pluggable losses, reference "
    "strategies, adapters, judges and post-training checks."
)
EPILOG = (
    "Start with `dpo-plugin demo` (a CPU run of a few minutes). `dpo-plugin train --help` lists the YAML keys; "
    "every command takes --help."
)
#: The widest a table gets before its widest columns wrap.
TABLE_WIDTH = 100


def _fit(widths: list[int], limit: int) -> list[int]:
    """Column widths whose table (two spaces between columns) fits ``limit``: the widest shrink first,
    to 10 at least."""
    widths = list(widths)
    while sum(widths) + 2 * (len(widths) - 1) > limit and max(widths) > 10:
        widths[widths.index(max(widths))] -= 1
    return widths


def _row_lines(row: Sequence[str], widths: Sequence[int]) -> list[str]:
    """One table row as lines: each cell wrapped at spaces to its column's width."""
    wrapped = [textwrap.wrap(cell, width, break_on_hyphens=False) or [""] for cell, width in zip(row, widths)]
    return [
        "  ".join((col[i] if i < len(col) else "").ljust(w) for col, w in zip(wrapped, widths)).rstrip()
        for i in range(max(map(len, wrapped)))
    ]


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, width: int | None = None) -> str:
    """A plain-text table; with ``width``, the widest columns wrap so that it fits
    (a blank line between wrapped rows)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if width is not None:
        widths = _fit(widths, width)
    head, *body = [_row_lines(row, widths) for row in cells]
    gap = [""] if any(len(lines) > 1 for lines in body) else []
    lines = head + ["  ".join("-" * w for w in widths)]
    for index, row_lines in enumerate(body):
        lines += (gap if index else []) + row_lines
    return "\n".join(lines)


def _plugin_entry(name: str, distribution: str, version: str, *, builtin: bool, **extra: Any) -> dict[str, Any]:
    registered: dict[str, list[str]] = {kind: [] for kind in KINDS}
    return {
        "name": name,
        "distribution": distribution,
        "version": version,
        "builtin": builtin,
        "registered": registered,
        **extra,
    }


def _plugins_listing(*, allow_broken: bool = False) -> dict[str, Any]:
    """Every plugin (with ``allow_broken``, a broken entry point too, with its ``error``) and every registered item."""
    pm = get_plugin_manager(allow_broken=allow_broken)
    plugins: dict[str, dict[str, Any]] = {}
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        dist, version = pm.distributions.get(name, ("dpo-plugin", __version__))
        plugins[name] = _plugin_entry(name, dist, version, builtin=name not in pm.distributions)
    for name, broken in pm.broken.items():
        plugins[name] = _plugin_entry(name, broken.distribution, broken.version, builtin=False, error=broken.error)
    kinds: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        registry = pm.registry(kind, allow_broken=allow_broken)
        kinds[kind] = {name: spec.to_dict() for name, spec in registry.items()}
        for name, spec in registry.items():
            plugins[spec.plugin]["registered"][kind].append(name)
    return {"plugins": list(plugins.values()), **kinds}


def cmd_plugins(args: argparse.Namespace) -> int:
    """The plugins and what each registered; a broken one is listed with its error, then the command fails."""
    listing = _plugins_listing(allow_broken=True)
    if args.json:
        print(json.dumps(listing, indent=2, default=str))
    else:
        rows = []
        for plugin in listing["plugins"]:
            registered = "; ".join(
                f"{kind}: {', '.join(names)}" for kind, names in plugin["registered"].items() if names
            )
            source = f"{plugin['distribution']} {plugin['version']}" + (" (built-in)" if plugin["builtin"] else "")
            rows.append(
                (plugin["name"], source, f"BROKEN: {plugin['error']}" if "error" in plugin else registered or "-")
            )
        print(_table(("plugin", "from", "registers"), rows))
    get_plugin_manager(allow_broken=True).raise_for_broken()  # the error naming it and how to skip it: exit 2
    return 0


def cmd_losses(args: argparse.Namespace) -> int:
    losses = _plugins_listing()["losses"]
    if args.json:
        print(json.dumps(losses, indent=2, default=str))
        return 0
    rows = [
        (
            name,
            "yes" if spec["needs_reference"] else "no",
            ", ".join(f"{k}={v}" for k, v in spec["params"].items()) or "-",
            spec["description"].replace("``", ""),
        )
        for name, spec in losses.items()
    ]
    print(_table(("loss", "reference", "parameters (defaults)", "description"), rows, width=TABLE_WIDTH))
    print("\n(`dpo-plugin plugins` shows the plugin that registered each loss; --json prints everything.)")
    return 0


def _host(argv: list[str]) -> tuple[Any, list[str]]:
    """The host a training command names (``--host NAME``, else the YAML's ``host:`` key, else trl) and the rest."""
    from pathlib import Path

    from .hosts.base import DEFAULT_HOST
    from .plugins import hosts
    from .yaml_file import read_yaml_mapping

    name = None
    if "--host" in argv:
        index = argv.index("--host")
        if index + 1 >= len(argv):
            raise DpoPluginError("--host needs a host name (`dpo-plugin plugins` lists them).")
        name = argv[index + 1]
        argv = argv[:index] + argv[index + 2 :]
    elif "--config" in argv and argv.index("--config") + 1 < len(argv):
        config = Path(argv[argv.index("--config") + 1])
        if config.is_file():
            name = read_yaml_mapping(config, empty_hint="").get("host")
    return hosts()[name or DEFAULT_HOST].obj, argv


def cmd_train(args: argparse.Namespace) -> int:
    host, rest = _host(list(args.rest))
    if {"-h", "--help", "--help-all"} & set(rest):
        print(host.train_help(full="--help-all" in rest), end="")
        return 0
    host.check_versions()  # before any model loads
    result = host.train(rest)
    if not result.main_process:  # under torchrun/accelerate the main process reports
        return 0
    print(f"Trained model saved to {result.output_dir}")
    shown = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    print(_table(("metric", "value"), [(k, f"{v:.4g}") for k, v in shown.items()]))
    if result.report is not None:
        print(_checks_table(result.report))
        print(_report_location(str(result.output_dir), result.report))
        return 1 if (result.strict_checks and not result.report["passed"]) else 0
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.run import check_overrides, fresh_output_dir, parse_mixes, run

    check_overrides(args.rest)
    mixes = parse_mixes(args.compare) if args.compare else [["sigmoid", "sft"]]
    output_dir = args.output_dir or fresh_output_dir()
    runs = []
    for mix in mixes:
        name = "+".join(mix)
        print(f"== Training SmolLM2-135M-Instruct with LoRA, losses: {name} ==", flush=True)
        folder = output_dir if len(mixes) == 1 else f"{output_dir}/{name}"
        demo = run(mix, folder, args.rest)
        runs.append(demo)
        print(_checks_table(demo.result.report))
        print(_report_location(folder, demo.result.report))
    if len(runs) > 1:
        rows = []
        for demo in runs:
            checks = demo.result.report["checks"]
            win, margin = checks["win_rate"], checks["reward_margin"]
            rows.append(
                (
                    "+".join(demo.losses),
                    f"{win['metrics']['win_rate']:.3f} [{win['interval'][0]:.3f}, {win['interval'][1]:.3f}]",
                    f"{margin['metrics']['accuracy']:.3f}",
                    f"{demo.exact}/{demo.prompts}",
                    "passed" if demo.result.report["passed"] else "NOT passed",
                    f"{demo.seconds:.0f} s",
                )
            )
        print(_table(("losses", "win rate vs reference", "reward accuracy", "exact answers", "checks", "time"), rows))
        print(
            "Pure DPO (sigmoid) can win on the preference signal yet never produce the chosen format; the SFT term "
            "anchors the chosen answers. Read the side-by-side samples in each report."
        )
        return 0
    return 0 if runs[0].result.report["passed"] else 1


def _json_option(text: str | None, flag: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DpoPluginError(f"{flag} must be a JSON object: {error}") from None
    if not isinstance(value, dict):
        raise DpoPluginError(f"{flag} must be a JSON object, got {text!r}.")
    return value


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.saved_model import evaluate_saved_model

    report = evaluate_saved_model(
        args.model,
        args.data,
        base=args.base,
        reference=args.reference,
        checks=args.checks,
        judge=args.judge,
        judge_params=_json_option(args.judge_params, "--judge_params"),
        check_params=_json_option(args.check_params, "--check_params"),
        output_dir=args.output_dir,
        split=args.split,
        beta=args.beta,
        max_length=args.max_length,
        batch_size=args.batch_size,
        reuse_output_dir=args.reuse_output_dir,
    )
    print(_checks_table(report))
    print(_report_location(args.output_dir, report))
    return 1 if args.strict and not report["passed"] else 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from .data_checks import check_data
    from .forward.backend import default_backend
    from .preference_data import load_preference_data

    dataset = load_preference_data(args.data, split=args.split)
    tokenizer = None
    if args.model:
        from transformers import AutoTokenizer

        from .demo.smollm import resolve_model_name

        try:
            tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(args.model))
        except (OSError, ValueError) as error:
            raise DpoPluginError(f"Cannot load the tokenizer of --model {args.model!r}: {error}") from None
    logging.getLogger("dpo_plugin.data_quality").setLevel(logging.ERROR)  # the table shows the warnings
    report = check_data(
        dataset,
        default_backend(),
        tokenizer=tokenizer,
        max_length=args.max_length if tokenizer else None,
        truncation_mode=args.truncation_mode,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    if tokenizer is None and not args.json:
        print("(Pass --model to count the pairs dropped or truncated at --max_length and to check the chat template.)")
    return 0 if report.ok else 1


def _checks_table(report: dict[str, Any]) -> str:
    from .evaluation.report import headline

    rows = []
    for name, check in report["checks"].items():
        status = "skipped" if check.get("skipped") else ("passed" if check["passed"] else "FAILED")
        interval = check.get("interval")
        shown = f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "-"
        details = check.get("details", {})
        note = check.get("skipped") or "; ".join(details.get("reasons", []))
        rows.append(
            (name, status, headline(name, check.get("metrics", {}), details), shown, check.get("threshold", "-"), note)
        )
    verdict = "PASSED" if report["passed"] else "NOT PASSED"
    return _table(("check", "result", "value", "95% interval", "threshold", "note"), rows) + f"\nOverall: {verdict}"


def _report_location(folder: str, report: dict[str, Any]) -> str:
    files = report.get("files") or ["report.md"]
    return f"Report and plots in {folder}/eval/: {', '.join(files)}"


class _ExactParser(argparse.ArgumentParser):
    """A subcommand's parser: a flag is its whole name, never an abbreviation of it (``--out`` is not
    ``--output_dir``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def _option(parser: Any, name: str, **kwargs: Any) -> None:
    """``--name`` in TRL's underscore spelling (shown in the help) and, for a name with an underscore, the hyphen
    spelling ``--name-with-hyphens`` (accepted, not shown)."""
    parser.add_argument(f"--{name}", **kwargs)
    if "_" in name:
        same = {key: value for key, value in kwargs.items() if key not in ("help", "default", "required")}
        hidden = {"dest": name, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
        parser.add_argument(f"--{name.replace('_', '-')}", **same, **hidden)


def _add_listings(sub: Any) -> None:
    plugins = sub.add_parser("plugins", help="list installed plugins and what each registered")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plugins.set_defaults(func=cmd_plugins)
    losses = sub.add_parser("losses", help="list the registered losses with their parameters")
    losses.add_argument("--json", action="store_true", help="print JSON (with each loss's plugin) instead of a table")
    losses.set_defaults(func=cmd_losses)


def _add_training(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="train from a YAML: --config FILE.yaml [--key value ...] (every `trl dpo` key plus the plugin fields)",
        add_help=False,
    )
    train.set_defaults(func=cmd_train, takes_rest=True)
    demo = sub.add_parser(
        "demo",
        help="DPO-align SmolLM2-135M-Instruct on the shipped data, then check it (CPU, < 5 min)",
        epilog="Any `dpo-plugin train` flag (e.g. --max_steps 40) overrides the settings of demo/demo.yaml. "
        "--compare exits 0 once every mix has run (a failing mix is the point of the comparison).",
    )
    demo.add_argument("--compare", help="several loss mixes to train and tabulate, e.g. sigmoid,sigmoid+sft")
    _option(
        demo,
        "output_dir",
        help="where the run and its eval/ report go (default: runs/demo, or runs/demo-2, -3 … when it exists); "
        "--compare puts each mix in a subfolder",
    )
    demo.set_defaults(func=cmd_demo, takes_rest=True)


def _add_evaluate(sub: Any) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="run the post-training checks on a saved model, without training",
        description="Run the post-training checks on a saved model against a reference and write the report to "
        "OUTPUT_DIR/eval/ (report.md, report.json, plots).",
    )
    evaluate.add_argument(
        "--model",
        required=True,
        help="the trained model: a model folder, a PEFT adapter folder (applied to its base: --base, else the one "
        "its adapter_config.json names), a merged folder (merge_adapter: true writes OUTPUT_DIR/merged) or a hub id",
    )
    evaluate.add_argument("--base", help="the base model (folder or hub id) of an adapter folder given as --model")
    evaluate.add_argument(
        "--reference",
        help="the reference model (folder or hub id); default for an adapter folder: its base (the adapter "
        "disabled); give it for a full or merged model",
    )
    evaluate.add_argument("--data", required=True, help="preference data: hub name, file or folder")
    evaluate.add_argument("--split", default="test", help="the held-out split (default: test)")
    evaluate.add_argument(
        "--checks",
        nargs="+",
        default=["reward_margin", "win_rate"],
        metavar="CHECK",
        help="the checks to run (default: reward_margin win_rate; `dpo-plugin plugins` lists them)",
    )
    evaluate.add_argument("--judge", help="judge for win_rate: function, reward_model, llm, openai")
    _option(evaluate, "judge_params", help='the judge\'s options as JSON, e.g. \'{"function": "module:attr"}\'')
    _option(evaluate, "check_params", help='options per check as JSON, e.g. \'{"win_rate": {"max_new_tokens": 32}}\'')
    evaluate.add_argument(
        "--beta", type=float, default=0.1, help="β of the implicit rewards, as in training (default: 0.1)"
    )
    _option(
        evaluate,
        "max_length",
        type=int,
        default=1024,
        help="tokens of prompt + completion kept, as in training (default: 1024)",
    )
    _option(evaluate, "batch_size", type=int, default=8, help="pairs scored at once (default: 8)")
    _add_evaluate_output(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)


def _add_evaluate_output(evaluate: Any) -> None:
    """Where ``evaluate`` writes, and its exit code."""
    _option(evaluate, "output_dir", default="dpo-eval", help="the report goes to OUTPUT_DIR/eval/ (default: dpo-eval)")
    _option(
        evaluate,
        "reuse_output_dir",
        action="store_true",
        help="write eval/ into a folder that is not empty (its files are never changed), or replace the report an "
        "earlier run or evaluation wrote there",
    )
    evaluate.add_argument("--strict", action="store_true", help="exit 1 when a check does not pass")


def _add_check_data(sub: Any) -> None:
    check = sub.add_parser("check-data", help="data-quality checks of a preference dataset (exit 1 on errors)")
    check.add_argument("--data", required=True, help="preference data: hub name, file or folder")
    check.add_argument("--split", default="train", help="the split to check (default: train)")
    check.add_argument(
        "--model",
        help="a model or tokenizer: count pairs dropped or truncated at --max_length, check its chat template",
    )
    _option(
        check, "max_length", type=int, default=1024, help="with --model: the max_length of training (default: 1024)"
    )
    _option(
        check,
        "truncation_mode",
        default="keep_start",
        choices=["keep_start", "keep_end"],
        help="with --model: which end of a long prompt training keeps, as TRL's truncation_mode (default: keep_start)",
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(func=cmd_check_data)


def _unrecognized(rest: Sequence[str], flags: Sequence[str]) -> str:
    """argparse's message for arguments no option took, with the closest flag of the command for a mistyped one."""
    import difflib

    unknown = next((arg.split("=", 1)[0] for arg in rest if arg.startswith("--")), None)
    close = difflib.get_close_matches(unknown, flags, n=1) if unknown else []
    return f"unrecognized arguments: {' '.join(rest)}" + (f" (did you mean {close[0]}?)" if close else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dpo-plugin", description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"dpo-plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ExactParser)
    for add in (_add_listings, _add_training, _add_evaluate, _add_check_data):
        add(sub)
    for command in sub.choices.values():  # for the closest flag of a mistyped one
        command.set_defaults(flags=sorted(set(re.findall(r"--[A-Za-z][\w-]*", command.format_help()))))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "takes_rest", False):
        parser.error(_unrecognized(rest, getattr(args, "flags", ())))
    args.rest = rest
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except DpoPluginError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
