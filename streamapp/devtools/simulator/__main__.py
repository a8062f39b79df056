"""``python -m streamapp.devtools.simulator``: the fake PagerDuty, standalone (demos, scripts)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime, timedelta

from streamapp.devtools.simulator.data import generate_records
from streamapp.devtools.simulator.server import Simulator


def _latency(text: str) -> tuple[float, float]:
    try:
        low, _, high = text.partition(",")
        pair = (float(low), float(high or low))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("latency is MIN,MAX in seconds") from exc
    if pair[0] < 0 or pair[1] < pair[0]:
        raise argparse.ArgumentTypeError("latency needs 0 <= MIN <= MAX")
    return pair


def _rate(text: str) -> int | None:
    if text.lower() in ("none", "off", "0"):
        return None
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m streamapp.devtools.simulator",
        description="A fake PagerDuty Audit Records API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--records", type=int, default=5000, help="records of history")
    parser.add_argument("--days", type=float, default=3.0, help="history spread over DAYS")
    parser.add_argument(
        "--token",
        action="append",
        default=None,
        help="an API key the simulator accepts (repeatable; default demo-token)",
    )
    parser.add_argument(
        "--rate-limit", type=_rate, default=960, help="requests per minute per token; 'none' = off"
    )
    parser.add_argument("--latency", type=_latency, default=None, help="MIN,MAX seconds")
    parser.add_argument(
        "--trickle", type=float, default=None, help="add a new record every SECONDS"
    )
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    tokens = {token: "ok" for token in (args.token or ["demo-token"])}
    sim = Simulator(tokens=tokens, rate_limit_per_minute=args.rate_limit, latency=args.latency)
    now = datetime.now(UTC)
    if args.records > 0:
        sim.add_records(
            generate_records(
                args.records, start=now - timedelta(days=args.days), end=now, seed=args.seed
            )
        )
    base_url = await sim.start(args.host, args.port)
    print(f"PagerDuty audit simulator on {base_url} ({sim.record_count} records)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        n = 0
        while not stop.is_set():
            timeout = args.trickle if args.trickle else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout)
            if stop.is_set() or not args.trickle:
                continue
            n += 1
            moment = datetime.now(UTC)
            sim.add_records(
                generate_records(
                    1,
                    start=moment - timedelta(seconds=5),
                    end=moment,
                    seed=args.seed * 1_000_003 + n,
                )
            )
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
