"""`hallmark submit|audit verify|audit export-checkpoints|projections rebuild` — the event spine's commands."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

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
    submit.add_argument("--model", help="a model the generation stage serves (default: the embedded one)")
    submit.add_argument("--init-image", help="img2img / inpainting input: uploaded first (POST /v1/uploads)")
    submit.add_argument("--mask", help="inpainting mask (white = repaint), uploaded first; needs --init-image")
    submit.add_argument("--strength", type=float, help="how far to move from the init image, 0–1")
    submit.add_argument("--lora", action="append", default=[], metavar="NAME:SCALE", help="a LoRA adapter (repeat)")
    submit.add_argument("--wait", action="store_true", help="wait for the terminal outcome")
    submit.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    submit.add_argument("--api", help="API base URL (default http://127.0.0.1:$HALLMARK_API_PORT or :8080)")
    submit.add_argument("--key", help="API key (default $HALLMARK_API_KEY, else the dev key in var/api-keys.json)")
    submit.set_defaults(func=_submit)

    audit = subparsers.add_parser("audit", help="the tamper-evident audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_sub.add_parser("verify", help="recompute every partition's hash chain, hold it against the signed "
                                  "checkpoints; one line per break")
    verify.add_argument("--against", metavar="FILE", type=Path,
                        help="check against the checkpoints in FILE (JSON lines kept elsewhere) instead of the "
                             "audit-checkpoints topic and the local checkpoint file")
    verify.add_argument("--public-key", metavar="PEM", type=Path,
                        help="the checkpoint key's public half (default: next to the configured checkpoint key)")
    verify.set_defaults(func=_audit_verify)
    export = audit_sub.add_parser("export-checkpoints", help="print every signed checkpoint (JSON lines) for "
                                  "anchoring outside Hallmark")
    export.set_defaults(func=_audit_export)

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
            body |= _inputs(http, args)
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


def _inputs(http, args: argparse.Namespace) -> dict:
    """The spec's image inputs (uploaded first: events carry content addresses, never images), model and LoRAs."""
    from pathlib import Path

    from hallmark.cli import CommandError

    out: dict = {}
    for name, path in (("init_image", args.init_image), ("mask", args.mask)):
        if path:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc.strerror}") from None
            response = http.post("/v1/uploads", files={"file": (Path(path).name, data)})
            if response.status_code != 201:
                raise CommandError(f"upload of {path}: {response.status_code}: {_reason(response)}")
            out[name] = response.json()["sha256"]
    loras = []
    for spec in args.lora:
        name, _, scale = spec.rpartition(":")
        try:
            loras.append({"name": name, "scale": float(scale)})
        except ValueError:
            raise CommandError(f"--lora {spec!r}: expected NAME:SCALE") from None
    if loras:
        out["loras"] = loras
    for name in ("model", "strength"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    return out


def _reason(response) -> str:
    try:
        return response.json().get("reason", response.text)
    except ValueError:
        return response.text[:300]


def _audit_verify(args: argparse.Namespace) -> int:
    from hallmark.cli import CommandError
    from streams.auditlog import Break, verify

    records, found, junk = _read_audit(args.config)
    checkpoints = _checkpoint_file(args.against) if args.against else _known_checkpoints(args.config, found)
    report = verify(records, checkpoints, _public_key(args, bool(checkpoints)))
    report.breaks.extend(Break(p, o, "bad checkpoint", f"record {p}@{o} of audit-checkpoints is not a checkpoint")
                         for p, o in ([] if args.against else junk))
    parts = ", ".join(f"partition {p}: {n}" for p, n in sorted(report.partitions.items())) or "empty"
    anchored = f"{report.checkpoints} signed checkpoints" + (f" from {args.against}" if args.against else "")
    for p, n in sorted(report.unanchored.items()):
        if n:
            print(f"audit partition {p}: {n} records after the last checkpoint are not yet anchored")
    if report.ok:
        print(f"audit OK: {report.records} records, every chain intact and matching {anchored} ({parts})")
        return 0
    for b in report.breaks:
        print(f"BROKEN {b.line()}", file=sys.stderr)
    broken = sorted({b.partition for b in report.breaks})
    raise CommandError(f"audit log tampered: {len(report.breaks)} breaks in audit partition(s) "
                       f"{', '.join(map(str, broken))}; checked against {anchored}")


def _audit_export(args: argparse.Namespace) -> int:
    from streams.checkpoints import to_line

    _, found, junk = _read_audit(args.config, records=False)
    for p, o in junk:
        print(f"skipped record {p}@{o} of audit-checkpoints: not a checkpoint", file=sys.stderr)
    for checkpoint in _known_checkpoints(args.config, found):
        sys.stdout.write(to_line(checkpoint))
    return 0


def _read_audit(config, records: bool = True) -> tuple[list, list, list[tuple[int, int]]]:
    """Audit records (partition, offset, value), the topic's checkpoints, and where it holds non-checkpoints."""
    import asyncio

    from hallmark.cli import CommandError
    from schemas import PoisonMessage, parse_event
    from schemas.events import AuditCheckpoint
    from streams.topiclog import read_all

    client = config.operator_client()

    async def read():
        rows = await read_all(client, "audit") if records else []
        return [(r.partition, r.offset, r.value) for r in rows], await read_all(client, "audit-checkpoints")

    try:
        rows, raw = asyncio.run(read())
    except Exception as exc:  # the broker is down or unreachable
        raise CommandError(f"cannot read the audit topics: {exc.__class__.__name__}: {exc}") from None
    found, junk = [], []
    for r in raw:
        try:
            found.append(parse_event(r.value, expected=(AuditCheckpoint,)).payload)
        except PoisonMessage:
            junk.append((r.partition, r.offset))
    return rows, found, junk


def _known_checkpoints(config, found: list) -> list:
    """The topic's checkpoints and the local file's, once each, by (partition, offset)."""
    from streams.checkpoints import checkpoint_file

    path = checkpoint_file(config)
    both = found + (_checkpoint_file(path) if path.exists() else [])
    unique = {(c.partition, c.offset, c.head_hash, c.signature): c for c in both}
    return sorted(unique.values(), key=lambda c: (c.partition, c.offset, c.at))


def _checkpoint_file(path: Path) -> list:
    from hallmark.cli import CommandError
    from streams.checkpoints import CheckpointFileError, read_file

    try:
        return read_file(path)
    except CheckpointFileError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot read checkpoint file {path}: {exc.strerror or exc}") from None


def _public_key(args: argparse.Namespace, needed: bool):
    """The checkpoint key's public half: --public-key, else the `.pub` beside the key, else the key itself."""
    from hallmark.cli import CommandError
    from streams.checkpoints import key_path, load_public_key, public_path

    private = key_path(args.config)
    for path in [args.public_key] if args.public_key else [public_path(private), private]:
        if Path(path).exists():
            try:
                return load_public_key(path)
            except ValueError as exc:
                raise CommandError(f"cannot load the checkpoint public key {path}: {exc}") from None
    if needed:
        raise CommandError(f"no checkpoint public key (looked for {args.public_key or public_path(private)}); "
                           f"pass --public-key")
    return None


def _rebuild(args: argparse.Namespace) -> int:
    import asyncio

    from streams.stages.projections import rebuild

    settings = args.config
    count = asyncio.run(rebuild(settings))
    print(f"read models rebuilt from offset 0: {count} events applied ({settings.db_url})")
    return 0
