"""python -m simulator --host 127.0.0.1 --port 8100 [--time-scale 1] [--no-limits] [--check-answers]."""

from __future__ import annotations

import argparse
import json

import uvicorn

from simulator.app import SimulatorApp
from simulator.config import SANDBOX_KEY, SimConfig
from simulator.server import uvicorn_config


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Local Klaviyo API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--time-scale", type=float, default=1.0, help="divide window lengths and Retry-After")
    parser.add_argument("--no-limits", action="store_true", help="never answer 429 for rate limits")
    parser.add_argument("--config", help="JSON file with a partial config (same shape as POST /__sim/config)")
    parser.add_argument("--seed", type=int, help="seed for fault randomness")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--check-answers", action="store_true", help="check every answer against Klaviyo's spec (tests)"
    )
    args = parser.parse_args(argv)

    config = SimConfig(
        time_scale=args.time_scale,
        limits_enabled=not args.no_limits,
        seed=args.seed,
        check_answers=args.check_answers,
    )
    if args.config:
        with open(args.config) as fh:
            config.update(json.load(fh))
    print(f"Klaviyo simulator on http://{args.host}:{args.port} (sandbox key {SANDBOX_KEY})", flush=True)
    uvicorn.Server(uvicorn_config(SimulatorApp(config), args.host, args.port, args.log_level)).run()


if __name__ == "__main__":
    main()
