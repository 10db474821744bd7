"""Command line: ``python -m benchmarks NAME [--quick] [--data-dir DIR] [--out DIR]``.

Runs the benchmark module ``benchmarks/<NAME with - as _>.py`` and writes ``OUT/NAME.json``
(environment, result rows, summary) and, when the module has ``plot``, ``OUT/NAME.png``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import sys
import time
from pathlib import Path

from ._common import available_benchmarks, default_data_dir, environment


def _parser(names: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run one sksemiparam benchmark and write OUT/NAME.json (and OUT/NAME.png).",
        epilog="available benchmarks: " + (", ".join(names) or "none"),
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="benchmark to run")
    parser.add_argument("--list", action="store_true", help="list the available benchmarks and exit")
    parser.add_argument("--quick", action="store_true", help="smaller settings, for a check in minutes")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="directory of shared data sets (default: ../shared/data beside the repository, if it exists)",
    )
    parser.add_argument("--out", default="results", help="output directory (default: ./results)")
    return parser


def _describe(module_name: str) -> str:
    """First line of a benchmark module's docstring, read without importing it."""
    path = Path(__file__).resolve().parent / f"{module_name}.py"
    doc = ast.get_docstring(ast.parse(path.read_text()))
    return doc.strip().splitlines()[0] if doc else ""


def main(argv: list[str] | None = None) -> int:
    benchmarks = available_benchmarks()
    parser = _parser(list(benchmarks))
    args = parser.parse_args(argv)

    if args.list:
        width = max((len(n) for n in benchmarks), default=0)
        for name, module_name in benchmarks.items():
            print(f"{name:<{width}}  {_describe(module_name)}")
        return 0
    if args.name is None:
        parser.error("NAME is required (or --list)")
    name = args.name.replace("_", "-")
    if name not in benchmarks:
        parser.error(f"unknown benchmark {args.name!r}; available: {', '.join(benchmarks) or 'none'}")

    module = importlib.import_module(f"{__package__}.{benchmarks[name]}")
    data_dir = args.data_dir if args.data_dir is not None else default_data_dir()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print(f"benchmark {name} (quick={args.quick}, data_dir={data_dir})", flush=True)
    env = environment(args.quick)  # before the run: its date and load average are the start's
    start = time.perf_counter()
    # A benchmark whose run takes ``out`` keeps its own files there (e.g. finished folds to resume from).
    extra = {"out": str(out)} if "out" in inspect.signature(module.run).parameters else {}
    outcome = module.run(quick=args.quick, data_dir=data_dir, **extra)
    elapsed = time.perf_counter() - start

    env["total_seconds"] = round(elapsed, 2)
    report = {
        "name": name,
        "environment": env,
        "results": outcome["results"],
        "summary": outcome["summary"],
    }
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {json_path}")
    if hasattr(module, "plot"):
        png_path = out / f"{name}.png"
        module.plot(report, str(png_path))
        print(f"wrote {png_path}")
    print(json.dumps(report["summary"], indent=2))
    print(f"total {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
