"""`hallmark up|down` — local operations: the broker, one process per stage, the web servers."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    up = subparsers.add_parser("up", help="start the local stack: Kafka, every stage, the web servers")
    up.set_defaults(func=_up)
    down = subparsers.add_parser("down", help="stop everything `hallmark up` started")
    down.set_defaults(func=_down)


def _up(args: argparse.Namespace) -> int:
    from hallmark.broker import BrokerError
    from hallmark.cli import CommandError
    from hallmark.stack import Stack
    from streams.apikeys import ApiKeys

    config = args.config
    keys = ApiKeys.load(config.home / "api-keys.json")  # so the key exists before the API starts
    try:
        where = Stack(config).up()
    except (BrokerError, RuntimeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    width = max(map(len, where))
    for name, place in where.items():
        print(f"{name:<{width}}  {place}")
    print(f"{'logs':<{width}}  {config.home / 'logs'}")
    print(f"{'api key':<{width}}  {keys.dev_key()}  (tenant 'dev')")
    return 0


def _down(args: argparse.Namespace) -> int:
    from hallmark.stack import Stack

    stopped = Stack(args.config).down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0
