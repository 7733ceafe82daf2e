"""`auroraops`: the user's entry point. Exit codes: 0 success, 1 bad input or failed run, 2 usage."""

from __future__ import annotations

import argparse
# Before any command loads eccodes: its wheel bundles libsqlite3 3.26, and a process that loads
# that first gives Python's sqlite3 (and MLflow's sqlite store, which needs >= 3.31) the old library.
import sqlite3  # noqa: F401
import sys
import traceback
from importlib.metadata import version

from auroraops.commands import (compress, data, demo, evaluate, forecast, monitor, pipeline, predict, registry,
                               rollout, serve, train, tune)
from model_code.errors import DataError

COMMANDS = (forecast, data, demo, train, tune, compress, evaluate, pipeline, registry, serve, predict, rollout,
            monitor)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auroraops",
        description="Aurora weather models from raw meteorological data to forecasts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('aurora-mlops')}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a failed run, not a usage error: report it and exit 1
        if args.debug:
            traceback.print_exc()
        print(f"error: run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
