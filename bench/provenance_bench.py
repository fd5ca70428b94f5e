"""Provenance benchmark: mark (watermark + sign + register) and verify timings at 256×256.

    .venv/bin/python bench/provenance_bench.py [--runs 20]

The robustness table is bench/provenance_robustness.py; the million-fingerprint lookup is bench/provenance_lookup.py.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hallmark.config import HallmarkConfig  # noqa: E402
from provenance.images import decode, encode_png  # noqa: E402
from provenance.publisher import ProvenanceConfig, Publisher  # noqa: E402
from provenance.registry import AssetRegistry  # noqa: E402
from provenance.verify import Verifier  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def photo(name: str) -> np.ndarray:
    import skimage.data

    im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    side = min(im.size)
    return np.asarray(im.crop((0, 0, side, side)).resize((256, 256), Image.LANCZOS))


def shapes(seed: int) -> np.ndarray:
    from generator.shapes.dataset import make_example
    from generator.shapes.render import upscale

    return upscale(make_example(np.random.default_rng(seed))[0], 256)


def _crop(im: Image.Image, resize_back: bool) -> Image.Image:
    w, h = im.size
    dx, dy = round(w * 0.05), round(h * 0.05)  # 10% of each dimension, half from each side
    out = im.crop((dx, dy, w - dx, h - dy))
    return out.resize((w, h), Image.BILINEAR) if resize_back else out


def timings(runs: int, home: Path) -> dict[str, list[float]]:
    config = ProvenanceConfig.from_settings(HallmarkConfig.from_env(home=home))
    publisher, registry = Publisher(config), AssetRegistry(config.db_url)
    verifier = Verifier(config, registry)
    out: dict[str, list[float]] = {"mark": [], "verify (signed PNG)": [], "verify (stripped PNG)": [],
                                   "verify (JPEG q75)": [], "verify (10% crop)": [],
                                   "verify (rotated 180°, found by a dihedral PDQ variant)": [],
                                   "verify (unrelated image)": []}
    images = [photo(PHOTOS[i % len(PHOTOS)]) if i % 2 else shapes(i) for i in range(runs + 1)]
    for i, rgb in enumerate(images):
        png = encode_png(rgb)
        t0 = time.perf_counter()
        a = publisher.publish(png, f"bench-{i}", "shapes-ldm-v1", "bench-policy")
        registry.upsert(asset_id=a.asset_id, sha256=a.sha256, watermark_payload=a.watermark_payload,
                        manifest_label=a.manifest_label, model_id="shapes-ldm-v1", policy_version="bench-policy",
                        width=a.width, height=a.height, created_at=dt.datetime.now(dt.timezone.utc),
                        fingerprints=a.fingerprints)
        t1 = time.perf_counter()
        signed = Path(a.path).read_bytes()
        variants = {"verify (signed PNG)": signed, "verify (stripped PNG)": encode_png(decode(signed).rgb),
                    "verify (JPEG q75)": _jpeg_bytes(signed, 75),
                    "verify (10% crop)": encode_png(np.asarray(_crop(Image.fromarray(decode(signed).rgb), False))),
                    "verify (rotated 180°, found by a dihedral PDQ variant)": encode_png(
                        np.ascontiguousarray(rgb[::-1, ::-1])),
                    "verify (unrelated image)": encode_png(shapes(1000 + i))}
        if i == 0:
            continue  # warm-up: first native signer use, imports
        out["mark"].append(t1 - t0)
        for name, data in variants.items():
            t2 = time.perf_counter()
            verifier.verify(data)
            out[name].append(time.perf_counter() - t2)
    return out


def _jpeg_bytes(data: bytes, q: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, format="JPEG", quality=q)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        result = timings(args.runs, Path(home))
    print(f"## Timings, 256×256, {args.runs} runs (ms)\n")
    print("| step | median | p95 | max |\n|---|---|---|---|")
    for name, xs in result.items():
        xs = sorted(x * 1000 for x in xs)
        print(f"| {name} | {statistics.median(xs):.1f} | {xs[int(0.95 * (len(xs) - 1))]:.1f} | {xs[-1]:.1f} |")


if __name__ == "__main__":
    main()
