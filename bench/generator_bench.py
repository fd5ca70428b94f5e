"""Generator speed on this machine: one image at 20 steps with guidance, and a batch of 8 vs 8 sequential runs.

    .venv/bin/python bench/generator_bench.py [--model DIR] [--steps 20] [--repeats 3] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from generator.api import GenerationRequest
from generator.runtime import Generator

PROMPTS = ["a red circle", "two blue squares", "a green triangle above a yellow circle", "a purple square",
           "a small orange triangle on a black background", "three yellow circles",
           "a blue circle and a red square", "a circle that is green"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=GenerationRequest.guidance)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    gen = Generator.load(a.model, max_batch=8)
    requests = [GenerationRequest(prompt=t, seed=i, steps=a.steps, guidance=a.guidance) for i, t in enumerate(PROMPTS)]
    gen.generate(requests[:1])  # warm-up: first-call allocations
    single = [timed(lambda: gen.generate(requests[:1])) for _ in range(a.repeats)]
    # interleaved pairs: a drift in the machine's speed hits both sides of each ratio alike
    pairs = [(timed(lambda: [gen.generate([r]) for r in requests]), timed(lambda: gen.generate(requests)))
             for _ in range(a.repeats)]
    sequential, batched = [s for s, _ in pairs], [b for _, b in pairs]
    seq_ips, batch_ips = 8 / statistics.median(sequential), 8 / statistics.median(batched)
    speedups = sorted(s / b for s, b in pairs)
    print(json.dumps({
        "model_id": gen.model_id, "steps": a.steps, "guidance": a.guidance, "threads": torch.get_num_threads(),
        "single_image_s": {"median": round(statistics.median(single), 3), "min": round(min(single), 3)},
        "sequential_8_images_per_s": round(seq_ips, 2), "batch_8_images_per_s": round(batch_ips, 2),
        "batch_speedup": round(statistics.median(speedups), 2), "batch_speedup_each": [round(x, 2) for x in speedups],
        "targets": {"single_image_s": "<= 2.0", "batch_speedup": ">= 3.0"},
    }, indent=2))


if __name__ == "__main__":
    main()
