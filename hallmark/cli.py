"""`hallmark` — one command, subcommands registered by each domain package's own `cli` module."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)`; it must import nothing heavy at module import time
# so that `hallmark generate` never loads Kafka clients and `hallmark up` never loads torch.
COMMAND_MODULES = ("hallmark.ops", "hallmark.tenants_cli", "generator.cli", "streams.cli", "safety.cli", "provenance.cli", "review_ui.cli")


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hallmark", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that package has no CLI yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from hallmark.config import HallmarkConfig

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.config = HallmarkConfig.from_env()  # the one config root of this process, passed down in `args`
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"hallmark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    from hallmark.cli import main as _main  # one CommandError class, not a second copy in __main__

    sys.exit(_main())
