"""Safety gate speed on this machine: prompt gate batched throughput and single-prompt latency, image checks rate.

    .venv/bin/python bench/safety_bench.py [--threads 2] [--prompts 512] [--images 24] [--only prompts] [--fp32]

    .venv/bin/python bench/safety_bench.py --sealed      # the sealed multilingual test splits v1 and v2 (issue 18)

Targets (issue 18): prompt gate >= 500 prompts/s batched, p99 <= 10 ms single on 2 cores, every language pack loaded;
image checks >= 5 images/s at 256x256. Sealed split: minors block recall 1.00 in every language, other categories
caught (review or block) >= 0.95 pooled, benign not allowed <= 2% pooled.
Wall-clock rates depend on what else runs; "per CPU-second" (process CPU time) shows the cost itself, so on an
oversubscribed machine it estimates what one idle core would do.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def bench_prompts(threads: int, n: int, int8: bool = True) -> None:
    from safety.calibrate import load_devset
    from safety.embedding import EncoderConfig
    from safety.gates import PromptGateConfig, load_prompt_gate

    texts = [e.text for e in load_devset() if e.label == "benign"]  # benign: every prompt reaches the model
    prompts = [texts[i % len(texts)] for i in range(n)]
    lexical = load_prompt_gate(config=PromptGateConfig(embedding=False))
    gate = load_prompt_gate(config=PromptGateConfig(encoder=EncoderConfig(threads=threads, int8=int8)))
    t = time.perf_counter()
    gate.screen(["warm up the model"])
    print(f"prompt gate load (model + exemplar indexes): {time.perf_counter() - t:.1f}s")
    lexical.screen(["warm up"])

    lat = []
    for p in prompts[:300]:
        t = time.perf_counter()
        lexical.screen([p])
        lat.append(time.perf_counter() - t)
    print(f"lexical only, single prompt: p50 {_pct(lat, 50) * 1000:.0f} us  p99 {_pct(lat, 99) * 1000:.0f} us")

    batch = 64
    t, c = time.perf_counter(), time.process_time()
    for i in range(0, n, batch):
        verdicts = gate.screen(prompts[i:i + batch])
        assert all(v.stage != "error" for v in verdicts), verdicts[0]
    dt, dc = time.perf_counter() - t, time.process_time() - c
    print(f"prompt gate batched ({batch}/call): {n / dt:.0f} prompts/s wall;"
          f" {n / dc:.0f} prompts per CPU-second  ({n} prompts)")

    lat, cpu = [], []
    for p in prompts[:200]:
        t, c = time.perf_counter(), time.process_time()
        gate.screen([p])
        lat.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(f"prompt gate single prompt: wall p50 {_pct(lat, 50):.1f} ms  p95 {_pct(lat, 95):.1f} ms"
          f"  p99 {_pct(lat, 99):.1f} ms;  CPU p50 {_pct(cpu, 50):.1f} ms  p99 {_pct(cpu, 99):.1f} ms  (n={len(lat)})")


def sealed_report(threads: int) -> None:
    """Screen the sealed test splits (never used for tuning): a table per split, then both together."""
    from safety.calibrate import SEALED, SEALED_V2, language_table, load_devset
    from safety.embedding import EncoderConfig
    from safety.gates import PromptGateConfig, load_prompt_gate
    from safety.policy import load_pack

    gate = load_prompt_gate(config=PromptGateConfig(encoder=EncoderConfig(threads=threads)))
    zero_tolerance = load_pack().review.zero_tolerance
    both_examples, both_verdicts = [], []
    for name, path in (("sealed v1", SEALED), ("sealed v2", SEALED_V2), ("sealed v1 + v2", None)):
        if path is None:
            examples, verdicts = both_examples, both_verdicts
        else:
            examples = load_devset(path)
            verdicts = gate.screen([e.text for e in examples])
            both_examples, both_verdicts = both_examples + examples, both_verdicts + verdicts
        print(f"{name}: {len(examples)} prompts, {len({e.lang for e in examples})} languages;"
              f" policy {verdicts[0].policy_id}@{verdicts[0].policy_version}")
        print(language_table(examples, verdicts, zero_tolerance))
        by_cat: dict[str, list[int]] = {}
        for e, v in zip(examples, verdicts):
            c = by_cat.setdefault(e.label, [0, 0, 0])
            c[0] += 1
            c[1] += v.decision.value == "block"
            c[2] += v.decision.value != "allow"
        print("per category (n, blocked, not allowed): "
              + ", ".join(f"{k} {v[0]}/{v[1]}/{v[2]}" for k, v in by_cat.items()) + "\n")


def bench_images(threads: int, n: int) -> None:
    from skimage import data

    from generator.shapes.dataset import make_example
    from generator.shapes.render import upscale
    from safety.gates import ImageGateConfig, load_image_gate
    from safety.image_gate import ImageChecksConfig

    rng = np.random.default_rng(0)
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    images = []
    for i in range(n):
        arr = upscale(make_example(rng)[0], 256) if i % 2 else photos[i // 2 % len(photos)]
        images.append(Image.fromarray(arr).convert("RGB").resize((256, 256)))
    gate = load_image_gate(config=ImageGateConfig(checks=ImageChecksConfig(threads=threads)))
    t = time.perf_counter()
    gate.screen(images[:1])
    print(f"image gate load (open_nsfw + NudeNet + dlib): {time.perf_counter() - t:.1f}s")
    for batch in (1, 8):
        lat = []
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, n, batch):
            t = time.perf_counter()
            verdicts = gate.screen(images[i:i + batch])
            lat.append(time.perf_counter() - t)
            assert all(v.stage != "error" for v in verdicts), verdicts[0]
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        print(f"image checks 256x256, {batch}/call: {n / dt:.1f} images/s wall; {n / dc:.1f} images per CPU-second"
              f"  (p50 {_pct(lat, 50):.0f} ms per call)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--only", choices=("prompts", "images"))
    ap.add_argument("--fp32", action="store_true", help="encoder in fp32 only (no int8 first pass), for an A/B")
    ap.add_argument("--sealed", action="store_true", help="only the sealed-split report (no timings)")
    args = ap.parse_args()
    if args.sealed:
        sealed_report(args.threads)
        return
    import os

    print(f"cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}  threads: {args.threads}")
    if args.only != "images":
        bench_prompts(args.threads, args.prompts, int8=not args.fp32)
    if args.only != "prompts":
        bench_images(args.threads, args.images)


if __name__ == "__main__":
    main()
