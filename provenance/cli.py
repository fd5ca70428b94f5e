"""`hallmark provenance …` (init-keys, mark, serve) and `hallmark verify FILE`."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    prov = subparsers.add_parser("provenance", help="watermark, sign and register images; serve verification")
    sub = prov.add_subparsers(dest="provenance_command", metavar="ACTION", required=True)

    keys = sub.add_parser("init-keys", help="generate the local test CA and C2PA signing certificate")
    keys.add_argument("--force", action="store_true", help="replace existing keys")
    keys.set_defaults(func=_init_keys)

    mark = sub.add_parser("mark", help="watermark + sign + register an image made outside the pipeline")
    mark.add_argument("input", help="PNG, JPEG or WebP image (at least 256×256 to carry the watermark)")
    mark.add_argument("output", help="signed output, .png or .jpg")
    mark.add_argument("--asset-id", help="asset id (default: derived from the input's sha256)")
    mark.add_argument("--model-id", default="external")
    mark.add_argument("--policy-version", default="none")
    mark.set_defaults(func=_mark)

    serve = sub.add_parser("serve", help="serve the public verification API (POST /v1/verify, C2PA soft binding)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.set_defaults(func=_serve)

    verify = subparsers.add_parser("verify", help="print the provenance verdict (verified | similar | copy_suspected | "
                                                  "unknown) and its evidence for an image file, as JSON")
    verify.add_argument("file")
    verify.set_defaults(func=_verify)


def _config(args: argparse.Namespace):
    from provenance.publisher import ProvenanceConfig

    return ProvenanceConfig.from_settings(args.config)


def _init_keys(args: argparse.Namespace) -> int:
    from provenance.keys import generate_test_ca

    paths = generate_test_ca(_config(args).keys_dir, overwrite=args.force)
    print(f"signing key  {paths.private_key}\ncert chain   {paths.cert_chain}\ntrust anchor {paths.trust_anchors}")
    return 0


def _read(path: str) -> bytes:
    from hallmark.cli import CommandError

    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None


def _mark(args: argparse.Namespace) -> int:
    import datetime as dt
    import hashlib
    from pathlib import Path

    from hallmark.cli import CommandError
    from provenance.images import ImageError
    from provenance.publisher import Publisher
    from provenance.registry import AssetRegistry

    suffix = Path(args.output).suffix.lower()
    fmt = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(suffix)
    if fmt is None:
        raise CommandError(f"output must end in .png, .jpg or .jpeg, not {suffix or 'nothing'}")
    data = _read(args.input)
    asset_id = args.asset_id or f"ext-{hashlib.sha256(data).hexdigest()[:32]}"
    config = _config(args)
    try:
        asset = Publisher(config).publish(data, asset_id, args.model_id, args.policy_version, output_format=fmt)
    except ImageError as exc:
        raise CommandError(f"{args.input}: {exc.reason}") from None
    AssetRegistry(config.db_url).upsert(
        asset_id=asset.asset_id, sha256=asset.sha256, watermark_payload=asset.watermark_payload,
        manifest_label=asset.manifest_label, model_id=args.model_id, policy_version=args.policy_version,
        width=asset.width, height=asset.height, created_at=dt.datetime.now(dt.timezone.utc),
        fingerprints=asset.fingerprints)
    Path(args.output).write_bytes(Path(asset.path).read_bytes())
    note = "" if asset.watermark_payload else " (no watermark: image under 256×256)"
    print(f"{args.output}: asset {asset.asset_id} sha256 {asset.sha256} watermark {asset.watermark_payload}{note}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    import json

    from hallmark.cli import CommandError
    from provenance.images import ImageError
    from provenance.verify import Verifier

    try:
        result = Verifier(_config(args)).verify(_read(args.file))
    except ImageError as exc:
        raise CommandError(f"{args.file}: {exc.reason}") from None
    print(json.dumps(result, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import faiss
    import uvicorn

    from provenance.api import create_app

    # One query is 8 hashes: FAISS's OpenMP threads only add wake-up latency (bench/provenance_lookup.py measured a
    # 1M lookup at p99 of tens of ms with one thread, several times that with two on a busy 2-core host).
    faiss.omp_set_num_threads(1)
    uvicorn.run(create_app(_config(args)), host=args.host, port=args.port, log_level="info")
    return 0
