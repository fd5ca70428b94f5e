"""`hallmark submit|audit verify|projections rebuild` — the event spine's commands."""
from __future__ import annotations

import argparse
import json
import sys
import time

TERMINAL = ("published", "rejected", "failed")


def register(subparsers) -> None:
    submit = subparsers.add_parser("submit", help="submit a prompt over HTTP; --wait prints the outcome")
    submit.add_argument("prompt")
    submit.add_argument("--negative", default="", help="negative prompt")
    submit.add_argument("--seed", type=int)
    submit.add_argument("--steps", type=int)
    submit.add_argument("--n", type=int)
    submit.add_argument("--width", type=int)
    submit.add_argument("--height", type=int)
    submit.add_argument("--wait", action="store_true", help="wait for the terminal outcome")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    submit.add_argument("--api", help="API base URL (default http://127.0.0.1:$HALLMARK_API_PORT or :8080)")
    submit.add_argument("--key", help="API key (default $HALLMARK_API_KEY, else the dev key in var/api-keys.json)")
    submit.set_defaults(func=_submit)

    audit = subparsers.add_parser("audit", help="the tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser("verify", help="recompute every partition's hash chain; name the first break")
    verify.set_defaults(func=_audit_verify)

    proj = subparsers.add_parser("projections", help="the SQL read models")
    proj_sub = proj.add_subparsers(dest="projections_command", metavar="ACTION", required=True)
    rebuild = proj_sub.add_parser("rebuild", help="drop the read models and replay every topic from offset 0")
    rebuild.set_defaults(func=_rebuild)


def _submit(args: argparse.Namespace) -> int:
    import httpx

    from hallmark.cli import CommandError
    from streams.apikeys import ApiKeys

    config = args.config
    base = args.api or f"http://127.0.0.1:{config.ports.api}"
    key = args.key or config.api_key or ApiKeys.load(config.home / "api-keys.json").dev_key()
    body = {"prompt": args.prompt, "negative_prompt": args.negative}
    for name in ("seed", "steps", "n", "width", "height"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30.0) as http:
            response = http.post("/v1/requests", json=body)
            if response.status_code != 202:
                raise CommandError(f"{response.status_code}: {_reason(response)}")
            request_id = response.json()["request_id"]
            view = {"status": "accepted", "images": []}
            deadline = time.monotonic() + args.timeout
            while args.wait:
                view = http.get(f"/v1/requests/{request_id}").json()
                if view.get("status") in TERMINAL and (view["status"] != "published" or view.get("images")):
                    break
                if time.monotonic() > deadline:
                    raise CommandError(f"request {request_id} not finished after {args.timeout:.0f}s "
                                       f"(status {view.get('status')})")
                time.sleep(0.5)
    except httpx.HTTPError as exc:
        raise CommandError(f"cannot reach the API at {base} ({exc.__class__.__name__}); is `hallmark up` running?")
    result = {"request_id": request_id, "status": view.get("status"),
              "images": [image["path"] for image in view.get("images", [])]}
    if view.get("outcome") and view["status"] != "published":
        result["reason"] = view["outcome"].get("reason")
    print(json.dumps(result))
    return 0 if view.get("status") in ("published", "accepted") else 1


def _reason(response) -> str:
    try:
        return response.json().get("reason", response.text)
    except ValueError:
        return response.text[:300]


def _audit_verify(args: argparse.Namespace) -> int:
    import asyncio

    from hallmark.cli import CommandError
    from streams.auditlog import verify
    from streams.topiclog import read_to_end

    async def records():
        return [(r.partition, r.offset, r.value) async for r in read_to_end(args.config.kafka_bootstrap, "audit")]

    try:
        report = verify(sorted(asyncio.run(records()), key=lambda r: (r[0], r[1])))
    except Exception as exc:  # the broker is down or unreachable
        raise CommandError(f"cannot read the audit topic: {exc.__class__.__name__}: {exc}") from None
    parts = ", ".join(f"partition {p}: {n}" for p, n in sorted(report.partitions.items())) or "empty"
    if report.ok:
        print(f"audit OK: {report.records} records, every chain intact ({parts})")
        return 0
    for b in report.breaks:
        print(f"BROKEN audit partition {b.partition} at offset {b.offset}: {b.reason}", file=sys.stderr)
    first = report.breaks[0]
    raise CommandError(f"audit chain broken; first broken record: audit partition {first.partition} offset "
                       f"{first.offset}")


def _rebuild(args: argparse.Namespace) -> int:
    import asyncio

    from streams.stages.projections import rebuild

    settings = args.config
    count = asyncio.run(rebuild(settings))
    print(f"read models rebuilt from offset 0: {count} events applied ({settings.db_url})")
    return 0
