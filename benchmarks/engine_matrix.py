"""Every reference strategy × batch layout under DDP, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3, against one process.

Each cell trains 3 steps of 4 pairs on two CPU processes (gloo; 2 pairs each) and on one process
(4 pairs), with the reward-margin check after: its largest per-step loss gap, largest weight gap and
check-margin gap against the one-process run, and each process's peak RSS. Correctness, not speed:
the runs are short and the machine may be shared. Pass means |Δloss| ≤ 1e-5 at every step and
|Δweight| ≤ 1e-4. docs/multi-gpu.md holds the measured table.

    python benchmarks/engine_matrix.py [--engines ddp,fsdp2,zero2,zero3] [--strategies copy,...]
        [--layouts none,...] [--hidden 512 --layers 4] [--json results.json]

The model is a Llama of ``--hidden``/``--layers`` built from a config (no download), the data the
demo's first 32 training and 8 held-out pairs. Adam's ε is 1e-4 here: with the default 1e-8, a weight
whose gradient is near zero moves by ``lr·g/(|g|+ε)``, which turns the summation-order noise of a
gradient of ~1e-8 into steps of ~lr/10 (a handful of the 512-wide model's millions of weights then
differ by up to 6e-4 between one process and plain DDP, while the losses agree to 2e-6; with ε = 1e-4
the weights agree to 8e-7). Runs go through tests/engine_runs.py (FSDP2 on CPU through its test-only
launcher). DeepSpeed's first run builds its CPU communication op (about 80 s, cached in
~/.cache/torch_extensions). Rows come layout by layout, so a cut-short run has every strategy first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import engine_runs  # noqa: E402

from dpo_plugin.testing.tiny import save_tiny  # noqa: E402

LOSS_LIMIT, WEIGHT_LIMIT = 1e-5, 1e-4
SETTINGS = {"adam_epsilon": 1e-4}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default=",".join(engine_runs.ENGINES))
    parser.add_argument("--strategies", default=",".join(engine_runs.STRATEGIES))
    parser.add_argument("--layouts", default=",".join(engine_runs.LAYOUTS))
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write every cell's figures here")
    return parser.parse_args()


def margin(run: engine_runs.Run) -> float:
    return float(run.report()["checks"]["reward_margin"]["metrics"]["margin_mean"])


def cell(one: engine_runs.Run, run: engine_runs.Run) -> dict:
    """One engine's run against the one-process run: gaps, pass, peak memory (or the error that stopped it)."""
    if run.returncode != 0:
        lines = [line for line in run.stderr.splitlines() if "Error" in line or "error:" in line]
        return {"passed": False, "error": (lines or run.stderr.splitlines() or ["?"])[-1][-300:]}
    loss, weight = engine_runs.gaps(one, run)
    return {
        "passed": loss <= LOSS_LIMIT and weight <= WEIGHT_LIMIT,
        "loss_gap": loss,
        "weight_gap": weight,
        "margin_gap": abs(margin(one) - margin(run)),
        "peak_rss_mib": run.peak_rss_mib(),
    }


def main() -> None:
    args = arguments()
    workdir = Path(tempfile.mkdtemp(prefix="dpo-engine-matrix-"))
    model = save_tiny(workdir / "model", hidden_size=args.hidden, num_layers=args.layers)
    data = engine_runs.write_data(workdir / "data", train=32, test=8)
    engines = args.engines.split(",")
    results = []
    print("| strategy | layout | one process (MiB) | " + " | ".join(engines) + " |")
    print("|---|---|---|" + "---|" * len(engines))
    for layout in args.layouts.split(","):  # every strategy under every engine first, then the other layouts
        for strategy in args.strategies.split(","):
            start = time.perf_counter()
            one = engine_runs.train(
                workdir / f"single-{strategy}-{layout}",
                "single",
                strategy,
                layout,
                model=model,
                data=data,
                extra=SETTINGS,
            )
            if one.returncode != 0:
                sys.exit(f"one process failed ({strategy}, {layout}): {one.stderr[-2000:]}")
            row = {"strategy": strategy, "layout": layout, "single_rss_mib": one.peak_rss_mib()[0]}
            for engine in engines:
                run = engine_runs.train(
                    workdir / f"{engine}-{strategy}-{layout}",
                    engine,
                    strategy,
                    layout,
                    model=model,
                    data=data,
                    extra=SETTINGS,
                )
                row[engine] = cell(one, run)
            results.append(row)
            shown = [_shown(row[engine]) for engine in engines]
            print(f"| {strategy} | {layout} | {row['single_rss_mib']:.0f} | " + " | ".join(shown) + " |", flush=True)
            print(f"<!-- {time.perf_counter() - start:.0f} s -->", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    failed = sum(not row[engine]["passed"] for row in results for engine in engines)
    print(f"\n{len(results) * len(engines) - failed} of {len(results) * len(engines)} cells pass; runs in {workdir}")


def _shown(result: dict) -> str:
    if not result["passed"] and "error" in result:
        return f"FAIL: {result['error']}"
    mark = "ok" if result["passed"] else "FAIL"
    rss = "/".join(f"{mib:.0f}" for mib in result["peak_rss_mib"])
    return f"{mark} Δloss {result['loss_gap']:.0e}, Δw {result['weight_gap']:.0e}; {rss}"


if __name__ == "__main__":
    main()
