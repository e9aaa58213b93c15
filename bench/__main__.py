"""Run FlowForge's benchmarks, print one table and write the figures as JSON.

``python -m bench [NAME ...] [--quick] [--output PATH] [--check]`` runs the named
benchmarks (all by default) in this process and its children. A full run writes
``bench/results.json`` with the machine it ran on; a quick or partial run writes
``bench/results.partial.json``, so it never replaces the figures of a full run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench.figure import Figure
from bench.report import describe_machine, machine_info, table, write_results

#: Benchmark name -> module exposing ``run(quick: bool) -> list[Figure]``, in run order.
BENCHMARKS: dict[str, str] = {
    "engine": "bench.engine_overhead",
    "coldstart": "bench.cold_start",
    "validation": "bench.validation",
    "frames": "bench.log_frames",
    "aws": "bench.aws_cost",
    "runcost": "bench.run_cost",
    "fanout": "bench.fanout",
    "timers": "bench.timers",
    "scaling": "bench.scaling",
    "local": "bench.local_stack",
}

HERE = Path(__file__).resolve().parent
FULL_RESULTS = HERE / "results.json"
PARTIAL_RESULTS = HERE / "results.partial.json"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    parser.add_argument("-o", "--output", type=Path, help="where to write the JSON results")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    selected = args.names or list(BENCHMARKS)
    complete = not args.quick and selected == list(BENCHMARKS)
    output = args.output or (FULL_RESULTS if complete else PARTIAL_RESULTS)
    machine = machine_info()
    print(f"machine: {describe_machine(machine)}", flush=True)

    figures: list[Figure] = []
    errors: dict[str, str] = {}
    started = time.perf_counter()
    for name in selected:
        print(f"\n== {name}{' (quick)' if args.quick else ''}", flush=True)
        t0 = time.perf_counter()
        try:
            figures += importlib.import_module(BENCHMARKS[name]).run(args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
        print(f"   {name} took {time.perf_counter() - t0:.1f}s", flush=True)
    duration = time.perf_counter() - started
    machine["load_average_after"] = machine_info()["load_average"]

    print()
    print(table(figures))
    for f in figures:
        for key, value in f.details.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                print(f"\n{f.benchmark} / {f.name} — {key}:")
                for row in value:
                    print("   " + ", ".join(f"{k}={v}" for k, v in row.items()))
    write_results(
        output, figures, machine=machine, selected=selected, quick=args.quick,
        duration_s=duration, errors=errors,
    )  # fmt: skip
    print(f"\n{len(figures)} figures in {duration:.0f}s -> {output}")
    missed = [f"{f.benchmark}: {f.name}" for f in figures if f.met is False]
    if missed:
        print("targets missed:\n  " + "\n  ".join(missed))
    if errors:
        print("benchmarks that failed: " + ", ".join(errors), file=sys.stderr)
        return 2
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
