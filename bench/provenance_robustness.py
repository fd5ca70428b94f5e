"""Robustness of the verdict: marked photos and shapes renders under edits, unrelated images, copy attacks.

    .venv/bin/python bench/provenance_robustness.py [--filler 10000] [--quick]

Publishes every marked image through the real publisher (keyed watermark + C2PA + PDQ) into a registry padded with
`--filler` synthetic assets (random payloads and PDQ values, so the watermark rule pays for a realistic registry
size), then verifies edited copies with the real `Verifier` and counts verdicts. Prints markdown tables and the PDQ
distance distributions the thresholds are chosen from.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import provenance_images as imgs  # noqa: E402

from hallmark.config import HallmarkConfig  # noqa: E402
from provenance import watermark  # noqa: E402
from provenance.fingerprint import hex_to_bytes, pdq_dihedral  # noqa: E402
from provenance.images import decode, encode_png  # noqa: E402
from provenance.publisher import ProvenanceConfig, Publisher  # noqa: E402
from provenance.registry import AssetRecord, AssetRegistry  # noqa: E402
from provenance.verify import Verifier  # noqa: E402

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def add_filler(registry: AssetRegistry, n: int, seed: int = 7) -> None:
    """n synthetic rows with random payloads and PDQ values (bulk insert)."""
    rng = np.random.default_rng(seed)
    payloads, hashes = rng.integers(0, 256, (n, 8), np.uint8), rng.integers(0, 256, (n, 32), np.uint8)
    rows = [dict(asset_id=f"filler-{i}", sha256=f"{i:064x}", watermark_payload=payloads[i].tobytes().hex(),
                 manifest_label=None, model_id="filler", policy_version="filler", width=256, height=256,
                 pdq=hashes[i].tobytes().hex(), pdq_views="", pdq_quality=100, created_at=NOW)
            for i in range(n)]
    with registry.engine.begin() as conn:
        conn.execute(AssetRecord.__table__.insert(), rows)


class Bench:
    """A registry of marked images and a verifier over it."""

    def __init__(self, home: Path, filler: int):
        self.config = ProvenanceConfig.from_settings(HallmarkConfig.from_env(home=home))
        self.publisher, self.registry = Publisher(self.config), AssetRegistry(self.config.db_url)
        add_filler(self.registry, filler)
        self.verifier = Verifier(self.config, self.registry)
        self.signed: dict[str, bytes] = {}
        self.fingerprint: dict[str, str] = {}

    def publish(self, asset_id: str, rgb: np.ndarray) -> None:
        a = self.publisher.publish(encode_png(rgb), asset_id, "bench-model", "bench-policy")
        self.registry.upsert(asset_id=a.asset_id, sha256=a.sha256, watermark_payload=a.watermark_payload,
                             manifest_label=a.manifest_label, model_id="bench-model", policy_version="bench-policy",
                             width=a.width, height=a.height, created_at=NOW, fingerprints=a.fingerprints)
        self.signed[asset_id] = Path(a.path).read_bytes()
        self.fingerprint[asset_id] = [a.pdq, *a.pdq_views.values()]

    def verdict(self, data: bytes) -> tuple[str, str | None]:
        body = self.verifier.verify(data)
        return body["verdict"], (body["asset"] or {}).get("asset_id")


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.0f}% ({n}/{total})" if total else "–"


def marked_rows(bench: Bench, ids: list[str], distances: dict[str, list[int]]) -> list[str]:
    """One table row per edit: share verified / similar (right asset) / missed (unknown, copy_suspected or another
    asset named), and the median / max PDQ distance to the plain fingerprint."""
    rows = []
    for edit, fn in {"none (published file)": lambda d: d, **imgs.EDITS}.items():
        counts: Counter = Counter()
        for asset_id in ids:
            data = fn(bench.signed[asset_id])
            verdict, named = bench.verdict(data)
            counts[verdict if named in (asset_id, None) else "wrong"] += 1
            d_plain, d_view = nearest_views(decode(data).rgb, [bench.fingerprint[asset_id]])[0]
            distances.setdefault(edit, []).append(d_plain)
            distances.setdefault(f"{edit}, nearest stored view", []).append(d_view)
        n = len(ids)
        d = distances[edit][-n:]
        missed = n - counts["verified"] - counts["similar"]
        rows.append(f"| {edit} | {_pct(counts['verified'], n)} | {_pct(counts['similar'], n)} | {_pct(missed, n)} | "
                    f"{counts['copy_suspected']} | {counts['wrong']} | {int(np.median(d))} / {max(d)} |")
    return rows


def unrelated_rows(bench: Bench, groups: dict[str, list[np.ndarray]], donor: str) -> tuple[list[str], list[int]]:
    """Per group of unrelated images: verdicts as PNG, as JPEG q75, and with a donor's watermark copied on."""
    from imwatermark import WatermarkDecoder

    donor_rgb = decode(bench.signed[donor]).rgb
    bits = WatermarkDecoder("bits", watermark.PAYLOAD_BITS).decode(  # the public decoder, as an attacker would
        np.ascontiguousarray(donor_rgb[:, :, ::-1]), "dwtDctSvd", scales=[0, 48, 0])
    stolen = np.packbits(np.asarray(bits, np.uint8)).tobytes()
    rows, pairs = [], []
    for name, images in groups.items():
        plain, jpeg, copied = Counter(), Counter(), Counter()
        for rgb in images:
            png = encode_png(rgb)
            plain[bench.verdict(png)[0]] += 1
            jpeg[bench.verdict(imgs.EDITS["JPEG q75"](png))[0]] += 1
            copied[bench.verdict(encode_png(watermark.embed(rgb, stolen)))[0]] += 1
            pairs.extend(d for _, d in nearest_views(rgb, list(bench.fingerprint.values())))
        for label, c in (("as PNG", plain), ("as JPEG q75", jpeg), ("donor's watermark copied on", copied)):
            rows.append(f"| {name}, {label} | {len(images)} | {c['verified']} | {c['similar']} | "
                        f"{c['copy_suspected']} | {c['unknown']} |")
    return rows, pairs


def nearest_views(rgb: np.ndarray, assets: list[list[str]]) -> list[tuple[int, int]]:
    """Per asset (its plain PDQ, then its views): (distance to the plain PDQ, to the nearest of all), dihedral min."""
    query = hex_to_bytes([h.value for h in pdq_dihedral(rgb)])
    out = []
    for values in assets:
        table = np.unpackbits(hex_to_bytes(values)[:, None, :] ^ query[None, :, :], axis=-1).sum(-1).min(1)
        out.append((int(table[0]), int(table.min())))
    return out


def _quantiles(xs: list[int]) -> str:
    q = np.percentile(xs, [0, 0.1, 1, 5, 50, 95, 99, 100])
    return " / ".join(str(int(round(v))) for v in q)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filler", type=int, default=10_000, help="synthetic assets padding the registry")
    parser.add_argument("--quick", action="store_true", help="a third of the images (a smoke run)")
    args = parser.parse_args()
    step = 3 if args.quick else 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        bench = Bench(Path(home), args.filler)
        photos, quads = {}, []
        for name in imgs.PHOTO_SOURCES[::step]:
            views, zoomed = imgs.photo_patches(name)
            photos.update({f"photo-{name}-{i}": v for i, v in enumerate(views)})
            quads += zoomed
        renders = {f"render-{s}": imgs.draw(imgs.scene(s)[1]) for s in range(0, 30, step)}
        for asset_id, rgb in {**photos, **renders, "sinusoid-0": imgs.sinusoid(0.0)}.items():
            bench.publish(asset_id, rgb)
        seeds = range(0, 30, step)
        groups = {
            "photo quadrants (zoomed parts of registered photos' sources)": quads,
            "shapes renders, other scenes": [imgs.draw(imgs.scene(s)[1]) for s in range(1000, 1080, step)],
            "near-duplicate renders: same prompt, new layout": [imgs.same_prompt_other_layout(s) for s in seeds],
            "near-duplicate renders: one object moved 3 px (of 64)": [imgs.one_object_moved(s) for s in seeds],
            "sinusoid textures, other phases than the registered one": [imgs.sinusoid(p) for p in
                                                                        np.linspace(0.3, 3.0, 10)],
            "smooth noise": [imgs.noise(s) for s in range(10)],
        }
        distances: dict[str, list[int]] = {}
        header = ("| edit | verified | similar | missed | of which copy_suspected | wrong asset named "
                  "| PDQ distance median / max |\n|---|---|---|---|---|---|---|")
        for title, ids in (("photos", list(photos)), ("shapes renders", list(renders))):
            print(f"\n### Marked {title} ({len(ids)}, 256×256; registry of {len(bench.signed) + args.filler})\n")
            print(header + "\n" + "\n".join(marked_rows(bench, ids, distances)))
        rows, pairs = unrelated_rows(bench, groups, donor=next(iter(photos)))
        total = sum(len(g) for g in groups.values())
        print(f"\n### Unrelated images ({total}, each also as JPEG q75 and with a copied watermark)\n")
        print("| images | n | verified | similar | copy_suspected | unknown |\n|---|---|---|---|---|---|")
        print("\n".join(rows))
    print("\n### PDQ distances (min over dihedral variants; quantiles 0 / 0.1 / 1 / 5 / 50 / 95 / 99 / 100 %)\n")
    print("| pairs | n | distance |\n|---|---|---|")
    for edit, xs in distances.items():
        print(f"| own asset after {edit} | {len(xs)} | {_quantiles(xs)} |")
    print(f"| unrelated image to each registered asset, nearest stored view | {len(pairs)} | {_quantiles(pairs)} |")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
