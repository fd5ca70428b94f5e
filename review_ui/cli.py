"""`hallmark review serve|add-user|rebuild` — the reviewer console and its users."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    review = subparsers.add_parser("review", help="the reviewer console")
    sub = review.add_subparsers(dest="review_command", metavar="ACTION", required=True)

    serve = sub.add_parser("serve", help="serve the reviewer console (HTML + JSON API)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None, help="default: $HALLMARK_REVIEW_PORT or 8091")
    serve.add_argument("--lease-seconds", type=float, default=900.0, help="how long a claim holds (default 900)")
    serve.add_argument("--session-idle-seconds", type=float, default=1800.0, help="idle logout (default 1800)")
    serve.add_argument("--insecure-cookies", action="store_true",
                       help="drop the Secure cookie flag (only for plain HTTP on hosts other than localhost)")
    serve.set_defaults(func=_serve)

    add = sub.add_parser("add-user", help="add a reviewer or admin (password from a prompt or --password-stdin)")
    add.add_argument("name")
    add.add_argument("--role", choices=("reviewer", "admin"), required=True)
    add.add_argument("--prompt-access", action="store_true", help="may read the decrypted prompts of held tasks")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first stdin line")
    add.add_argument("--replace", action="store_true", help="reset an existing user's role and password")
    add.set_defaults(func=_add_user)

    rebuild = sub.add_parser("rebuild", help="drop the review read models and replay their topics from offset 0")
    rebuild.set_defaults(func=_rebuild)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from hallmark.cli import CommandError
    from review_ui.app import create_app
    from review_ui.service import ConsoleConfig

    if args.lease_seconds <= 0 or args.session_idle_seconds <= 0:
        raise CommandError("--lease-seconds and --session-idle-seconds must be positive")
    config = ConsoleConfig(lease_s=args.lease_seconds, session_idle_s=args.session_idle_seconds,
                           secure_cookies=not args.insecure_cookies)
    uvicorn.run(create_app(args.config, config), host=args.host, port=args.port or args.config.ports.review, log_level="info",
                server_header=False)
    return 0


def _add_user(args: argparse.Namespace) -> int:
    import getpass

    from hallmark.cli import CommandError
    from review_ui.users import UserStore
    from hallmark.db import engine_for

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the passwords differ")
    try:
        user = UserStore(engine_for(args.config.db_url)).add(args.name, args.role, password, args.prompt_access,
                                                            replace=args.replace)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    access = "with" if user.prompt_access else "without"
    print(f"{user.name}: {user.role}, {access} prompt access")
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    import asyncio

    from streams.stages.projections import rebuild

    print(f"rebuilt the review read models from {asyncio.run(rebuild(args.config, review_only=True))} events")
    return 0
