"""``python -m bench [--quick] [--json PATH] [--only NAME,...]``: run, print a table, save JSON."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Context, Result, print_table, stop_all

#: run order: cheap and informative first; memory (the longest) last
BENCHMARKS = ("pipeline", "backfill", "freshness", "busy", "fleet", "memory")
#: the whole run must stay under 15 min (quick: 2 min); the memory run uses what is left
FULL_BUDGET_S = 14 * 60
QUICK_BUDGET_S = 110


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (under 2 minutes)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=N",
        help="override a size: pipeline, backfill (records), freshness (samples), busy "
        "(worker polls), fleet (sources), memory (ids)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    args.names = [n for n in BENCHMARKS if n in names]
    args.sizes = {}
    for item in args.size:
        name, _, value = item.partition("=")
        if name not in BENCHMARKS or not value.isdigit() or int(value) < 1:
            parser.error(f"--size expects NAME=N with NAME in {', '.join(BENCHMARKS)}")
        args.sizes[name] = int(value)
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds every try/finally that stops a process


async def run_all(names: list[str], ctx: Context) -> tuple[list[Result], dict[str, str]]:
    results: list[Result] = []
    errors: dict[str, str] = {}
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"--- {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            result = await module.run(ctx)
        except Exception as exc:
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        result.elapsed_s = time.monotonic() - started
        print(f"--- {name} done in {result.elapsed_s:.0f}s", file=sys.stderr, flush=True)
        results.append(result)
    return results, errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(stop_all)
    started = time.monotonic()
    scratch = tempfile.mkdtemp(prefix="streamapp-bench-")
    ctx = Context(
        quick=args.quick,
        workdir=Path(scratch),
        sizes=args.sizes,
        deadline=started + (QUICK_BUDGET_S if args.quick else FULL_BUDGET_S),
    )
    try:
        results, errors = asyncio.run(run_all(args.names, ctx))
    except KeyboardInterrupt:
        print("interrupted: stopping every process started", file=sys.stderr)
        return 130
    finally:
        stop_all()
        if args.keep:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    wall = time.monotonic() - started
    print_table(results)
    print(f"wall time {wall:.0f}s ({'quick' if args.quick else 'full'})")
    for name, error in errors.items():
        print(f"[{name}] FAILED: {error}")
    if args.json is not None:
        document: dict[str, Any] = {
            "created": datetime.now(UTC).isoformat(),
            "quick": args.quick,
            "wall_s": round(wall, 1),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "broker": os.environ.get("KAFKA_BROKER") or "embedded tansu",
            "benchmarks": {r.name: r.to_json() for r in results},
            "errors": errors,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
