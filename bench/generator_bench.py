"""Generator benchmarks. `serving` (the default): our engine against diffusers' own pipelines in one run.

    .venv/bin/python bench/generator_bench.py serving [--shapes sd,xl] [--requests 64] [--rounds 2] [--gpu]
    .venv/bin/python bench/generator_bench.py micro [--model DIR] [--steps 20] [--repeats 3]

Serving: one fixed stream of requests (seeded prompts, seeds and mixed step counts). First each diffusers mode's
capacity is measured with every request queued at t=0: one pipeline call per request, and batches of queued requests
of equal step count at each batch size (the best size is kept). Then the stream arrives as a Poisson process at 0.8×
(and at 1.0×) the best diffusers capacity and is served by diffusers one-by-one, diffusers batched (best size) and
our engine, interleaved over rounds so machine load hits all sides alike; medians are reported. Same model (the very
same loaded modules), same device, same run. On CPU: tiny random SD1.5- and SDXL-shaped folders built on the fly;
with --gpu: full-size SD1.5 (512²) and SDXL (1024²) shapes with random weights, 30 steps on average.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.tiny_sd builds the random folders

from generator.api import GenerationRequest, RequestError  # noqa: E402
from generator.runtime import Engine, EngineConfig  # noqa: E402
from generator.runtime.samplers import make_scheduler  # noqa: E402

WORDS = ["a red fox", "an old lighthouse", "a bowl of ramen", "a city at night", "a portrait of a sailor",
         "a snowy forest", "a vintage car", "a cat on a windowsill", "a mountain lake", "a robot in a garden"]


@dataclass(frozen=True)
class Shape:
    name: str
    size: int  # pixels a side
    steps: tuple[int, ...]  # the step-count mix
    batch_sizes: tuple[int, ...]  # diffusers batch sizes tried for its capacity
    max_batch: int  # our engine's running-set cap


CPU_STEPS = (10, 15, 20, 25, 30, 40, 50)
GPU_STEPS = (20, 25, 30, 35, 40)  # mean 30
SHAPES = {
    ("sd", False): Shape("sd", 64, CPU_STEPS, (2, 4, 8, 16), 32),
    ("xl", False): Shape("xl", 64, CPU_STEPS, (2, 4, 8, 16), 32),
    ("sd", True): Shape("sd", 512, GPU_STEPS, (2, 4, 8, 16), 16),
    ("xl", True): Shape("xl", 1024, GPU_STEPS, (2, 4, 8), 8),
}


def full_size(xl: bool) -> dict:
    """Component configs of SD1.5 (CLIP-L, 860M UNet) and SDXL base (CLIP-L + OpenCLIP-bigG, 2.6B UNet)."""
    clip_l = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                  vocab_size=49408)
    vae = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
               sample_size=1024 if xl else 512, force_upcast=False)
    if not xl:
        unet = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        return {"unet": unet, "clip": [clip_l], "vae": vae, "max_length": 77}
    clip_g = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                  vocab_size=49408)
    unet = dict(sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816)
    return {"unet": unet, "clip": [clip_l, clip_g], "vae": vae | {"scaling_factor": 0.13025}, "max_length": 77}


def stream(n: int, shape: Shape, seed: int) -> list[GenerationRequest]:
    rng = random.Random(seed)
    return [GenerationRequest(prompt=f"{rng.choice(WORDS)}, study {i}", seed=rng.randrange(2**31), guidance=7.5,
                              steps=rng.choice(shape.steps), sampler="dpmpp_2m", width=shape.size,
                              height=shape.size, model=shape.name) for i in range(n)]


class Ours:
    """Our engine: requests join at the next step boundary."""

    def __init__(self, engine: Engine):
        self.engine, self.ids = engine, {}

    def submit(self, i: int, request: GenerationRequest) -> None:
        self.ids[self.engine.add_request(request)] = i

    def busy(self) -> bool:
        return self.engine.has_unfinished()

    def work(self) -> list[int]:
        done = self.engine.step()
        for _, result in done:
            assert not isinstance(result, RequestError), result.reason()
        return [self.ids.pop(request_id) for request_id, _ in done]


class Diffusers:
    """diffusers' pipeline: batch 1 = one call per request; else queued requests of equal step count, FIFO-first."""

    def __init__(self, pipe, batch: int, sync):
        self.pipe, self.batch, self.sync, self.queue = pipe, batch, sync, deque()

    def submit(self, i: int, request: GenerationRequest) -> None:
        self.queue.append((i, request))

    def busy(self) -> bool:
        return bool(self.queue)

    def work(self) -> list[int]:
        steps = self.queue[0][1].steps  # the oldest request's step count
        group = [item for item in self.queue if item[1].steps == steps][:self.batch]
        for item in group:
            self.queue.remove(item)
        reqs = [r for _, r in group]
        self.pipe([r.prompt for r in reqs], negative_prompt=[r.negative_prompt for r in reqs],
                  num_inference_steps=steps, guidance_scale=reqs[0].guidance, height=reqs[0].height,
                  width=reqs[0].width, output_type="pil",
                  generator=[torch.Generator().manual_seed(r.seed) for r in reqs])
        self.sync()
        return [i for i, _ in group]


def serve(server, requests: list[GenerationRequest], arrivals: list[float]) -> dict:
    """Feed requests at their arrival times (seconds from start); latency = completion − arrival."""
    done, nxt, start = {}, 0, time.perf_counter()
    while len(done) < len(requests):
        now = time.perf_counter() - start
        while nxt < len(requests) and arrivals[nxt] <= now:
            server.submit(nxt, requests[nxt])
            nxt += 1
        if server.busy():
            finished = server.work()
            t = time.perf_counter() - start
            done.update({i: t for i in finished})
        elif nxt < len(requests):
            time.sleep(max(0.0, arrivals[nxt] - now))
    latency = sorted(done[i] - arrivals[i] for i in range(len(requests)))
    span = max(done.values()) - min(arrivals)
    return {"images_per_s": len(requests) / span, "p50_s": float(np.percentile(latency, 50)),
            "p99_s": float(np.percentile(latency, 99)), "span_s": span}


def pipeline_for(engine: Engine, model: str):
    """diffusers' own pipeline on the engine's loaded modules (same weights, device and dtype)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    folder = engine.model(model)[1]
    c = folder.components
    parts = dict(vae=c["vae"], text_encoder=c["text_encoders"][0], tokenizer=c["tokenizers"][0], unet=c["unet"],
                 scheduler=make_scheduler("dpmpp_2m", c["scheduler_config"]))
    if folder.xl:
        pipe = StableDiffusionXLPipeline(**parts, text_encoder_2=c["text_encoders"][1], tokenizer_2=c["tokenizers"][1],
                                         add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_shape(shape: Shape, folder: Path, a: argparse.Namespace) -> dict:
    config = EngineConfig(models={shape.name: folder}, device=a.device, dtype=a.dtype, compile=a.compile,
                          max_batch=shape.max_batch)
    engine = Engine(config)
    pipe = pipeline_for(engine, shape.name)
    sync = torch.cuda.synchronize if engine.model(shape.name)[1].device.type == "cuda" else (lambda: None)
    requests = stream(a.requests, shape, a.seed)
    warm = stream(4, shape, a.seed + 1)
    serve(Ours(engine), warm, [0.0] * 4)  # first-call allocations (and compilation) on both sides
    serve(Diffusers(pipe, 2, sync), warm, [0.0] * 4)
    modes = {f"diffusers_batch_{b}": (lambda b=b: Diffusers(pipe, b, sync)) for b in (1, *shape.batch_sizes)}
    capacity = interleaved(modes | {"ours": lambda: Ours(engine)}, requests, [0.0] * len(requests), a.rounds)
    best = max(modes, key=lambda m: capacity[m]["images_per_s"])
    report = {"shape": shape.name, "size": shape.size, "requests": len(requests), "steps_mix": list(shape.steps),
              "device": str(engine.model(shape.name)[1].device), "dtype": str(engine.model(shape.name)[1].dtype),
              "capacity_images_per_s_all_queued": {m: r["images_per_s"] for m, r in capacity.items()},
              "capacity_ratio_ours_vs_best_diffusers": ratio(capacity, "ours", best)}
    rng = np.random.default_rng(a.seed)
    gaps = rng.exponential(1.0, len(requests))  # unit-rate Poisson gaps, scaled per load below
    served = {"diffusers_per_request": modes["diffusers_batch_1"], best.replace("batch", "batched"): modes[best],
              "ours": lambda: Ours(engine)}
    loads = {"poisson_at_0.8x_best_diffusers": 0.8 * capacity[best]["images_per_s"],
             "poisson_at_1.0x_best_diffusers": capacity[best]["images_per_s"]}  # keeps every server busy
    for name, rate in loads.items():
        med = interleaved(served, requests, list(np.cumsum(gaps / rate)), a.rounds)
        rival = max((m for m in med if m != "ours"), key=lambda m: med[m]["images_per_s"])
        report[name] = {"rate_per_s": round(rate, 3), **med, "ratio_images_per_s": ratio(med, "ours", rival),
                        "p99_s_ours_vs_better_diffusers": [med["ours"]["p99_s"], med[rival]["p99_s"]]}
    return report


def ratio(results: dict, ours: str, rival: str) -> float:
    return round(results[ours]["images_per_s"] / results[rival]["images_per_s"], 2)


def interleaved(modes: dict, requests: list, arrivals: list[float], rounds: int) -> dict:
    """Median per mode over rounds; each round runs every mode, in a rotated order, so load drift hits all."""
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    names = list(modes)
    for r in range(rounds):
        for m in names[r % len(names):] + names[:r % len(names)]:
            runs[m].append(serve(modes[m](), requests, arrivals))
    return {m: {k: round(statistics.median(x[k] for x in rs), 3) for k in rs[0]} | {"each_images_per_s": [
        round(x["images_per_s"], 3) for x in rs]} for m, rs in runs.items()}


def serving(a: argparse.Namespace) -> None:
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    from tests.tiny_sd import build_sd_folder, tiny_shapes

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    if a.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: no CUDA device here")
    card = torch.cuda.get_device_name(0) if a.gpu else None
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.shapes.split(","):
            shape = SHAPES[(name, a.gpu)]
            shapes = full_size(name == "xl") if a.gpu else tiny_shapes(name == "xl")
            folder = build_sd_folder(Path(tmp) / name, shapes, dtype=torch.float16 if a.gpu else torch.float32)
            report = bench_shape(shape, folder, a)
            print(json.dumps({"card": card, "threads": torch.get_num_threads(), **report}, indent=2), flush=True)


def micro(a: argparse.Namespace) -> None:
    """One image, and 8 sequential vs one batch of 8 on the embedded (or given) model."""
    engine = Engine.for_folder(a.model, EngineConfig(max_batch=8))
    requests = [GenerationRequest(prompt=w, seed=i, steps=a.steps) for i, w in enumerate(WORDS[:8])]

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    engine.generate(requests[:1])
    single = [timed(lambda: engine.generate(requests[:1])) for _ in range(a.repeats)]
    pairs = [(timed(lambda: [engine.generate([r]) for r in requests]), timed(lambda: engine.generate(requests)))
             for _ in range(a.repeats)]
    print(json.dumps({"single_image_s": round(statistics.median(single), 3),
                      "sequential_8_images_per_s": round(8 / statistics.median(s for s, _ in pairs), 2),
                      "batch_8_images_per_s": round(8 / statistics.median(b for _, b in pairs), 2),
                      "batch_speedup": round(statistics.median(s / b for s, b in pairs), 2)}, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", nargs="?", default="serving", choices=["serving", "micro"])
    p.add_argument("--gpu", action="store_true", help="full-size SD1.5 / SDXL shapes on CUDA")
    p.add_argument("--shapes", default="sd,xl", help="sd, xl or sd,xl")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto: fp32 on CPU; the --gpu folders are fp16")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default=None, help="micro: model folder")
    p.add_argument("--steps", type=int, default=20, help="micro: steps")
    p.add_argument("--repeats", type=int, default=3, help="micro: repeats")
    a = p.parse_args()
    if a.gpu and a.dtype == "auto":
        a.dtype = "float16"
    torch.set_num_threads(a.threads)
    serving(a) if a.mode == "serving" else micro(a)


if __name__ == "__main__":
    main()
