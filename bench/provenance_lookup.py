"""Fingerprint lookup at scale: one query (8 dihedral PDQ variants) against 1,000,000 synthetic fingerprints.

    .venv/bin/python bench/provenance_lookup.py [--n 1000000] [--queries 200] [--threads 1 2] [--no-registry]

Builds the synthetic set once (random 256-bit values, plus one real photo's PDQ as the asset to find), then times
`PdqIndex.nearest` (FAISS `IndexBinaryFlat`, with each thread count asked for) and, unless --no-registry,
`AssetRegistry.near_duplicates` over a SQLite registry holding the same million rows (memory warm, one FAISS thread
as the server runs). Hashing is timed on its own: it is not part of lookup.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provenance.fingerprint import PdqIndex, pdq, pdq_dihedral  # noqa: E402


def _stats(ms: list[float]) -> str:
    xs = np.asarray(ms)
    return " | ".join(f"{np.percentile(xs, p):.1f}" for p in (50, 95, 99)) + f" | {xs.max():.1f}"


def _time(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def queries() -> tuple[np.ndarray, list[list[str]]]:
    """The photo to find and edited copies of it (rotated, mirrored, JPEG q50), as dihedral variant lists."""
    import skimage.data

    rgb = skimage.data.astronaut()
    edits = [np.rot90(rgb), rgb[:, ::-1], np.rot90(rgb, 2)]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=50)
    edits.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return rgb, [[h.value for h in pdq_dihedral(np.ascontiguousarray(e))] for e in edits]


def hashing_rows() -> list[str]:
    import skimage.data

    small = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((256, 256)))
    large = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((1024, 1024)))
    return [f"| PDQ, one hash, {s.shape[1]}×{s.shape[0]} | {_stats(_time(lambda s=s: pdq(s), 50))} |"
            for s in (small, large)] + [
        f"| PDQ, 8 dihedral variants, {s.shape[1]}×{s.shape[0]} | {_stats(_time(lambda s=s: pdq_dihedral(s), 50))} |"
        for s in (small, large)]


def registry_with(n: int, codes: np.ndarray, target: str, home: Path):
    """A SQLite registry holding n synthetic rows and the target (bulk insert), its memory loaded."""
    from provenance.registry import AssetRecord, AssetRegistry

    registry = AssetRegistry(f"sqlite:///{home / 'registry.db'}")
    when = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    hexes = [c.tobytes().hex() for c in codes]
    with registry.engine.begin() as conn:
        for start in range(0, n, 100_000):
            conn.execute(AssetRecord.__table__.insert(), [
                dict(asset_id=f"a{i}", sha256=f"{i:064x}", watermark_payload=hexes[i][:16], manifest_label=None,
                     model_id="m", policy_version="p", width=256, height=256, pdq=hexes[i], pdq_views="",
                     pdq_quality=100, created_at=when) for i in range(start, min(n, start + 100_000))])
        conn.execute(AssetRecord.__table__.insert(), [dict(
            asset_id="target", sha256="f" * 64, watermark_payload="", manifest_label=None, model_id="m",
            policy_version="p", width=512, height=512, pdq=target, pdq_views="", pdq_quality=100,
            created_at=when)])
    registry.watermarked()  # first use loads memory
    return registry


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="FAISS OpenMP threads to try")
    parser.add_argument("--no-registry", action="store_true", help="time the index only")
    args = parser.parse_args()
    rgb, variant_sets = queries()
    target = pdq(rgb).value
    codes = np.random.default_rng(16).integers(0, 256, (args.n, 32), np.uint8)
    t0 = time.perf_counter()
    index = PdqIndex()
    index.add_bytes([f"a{i}" for i in range(args.n)], codes)
    index.add(["target"], [target])
    print(f"index of {len(index):,} fingerprints built in {time.perf_counter() - t0:.1f} s; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n")
    print("| lookup (one query = 8 dihedral variants, k=5, distance ≤ 31) | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    found = {hits[0][0] if hits else None for hits in (index.nearest(v) for v in variant_sets)}
    assert found == {"target"}, f"lookup missed the planted asset: {found}"
    for threads in args.threads:
        faiss.omp_set_num_threads(threads)
        rotation = itertools.cycle(variant_sets)
        ms = _time(lambda rotation=rotation: index.nearest(next(rotation)), args.queries)
        print(f"| PdqIndex.nearest, {threads} FAISS thread(s) | {_stats(ms)} |", flush=True)
    if not args.no_registry:
        with tempfile.TemporaryDirectory() as home:
            t0 = time.perf_counter()
            registry = registry_with(args.n, codes, target, Path(home))
            built = time.perf_counter() - t0
            faiss.omp_set_num_threads(1)  # as `hallmark provenance serve` runs
            hits = registry.near_duplicates(variant_sets[0])
            assert hits and hits[0][0].asset_id == "target"
            rotation = itertools.cycle(variant_sets)
            ms = _time(lambda: registry.near_duplicates(next(rotation)), args.queries)
            print(f"| AssetRegistry.near_duplicates (SQLite, memory warm), 1 thread | {_stats(ms)} |")
            print(f"\n(registry of {args.n + 1:,} rows written and loaded in {built:.0f} s)", flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    print("\n| hashing (not part of lookup) | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|")
    print("\n".join(hashing_rows()))


if __name__ == "__main__":
    main()
