"""The engine: checks requests, admits them at step boundaries, runs the step scheduler's groups, decodes results.

The per-request loop is diffusers' SD/SDXL (img2img, inpaint) pipelines' step for step (the fidelity tests hold us
to it); a request's image does not depend on its batch-mates or on when it joined (tests/test_generator_batching.py).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from generator.api import GeneratedImage, GenerationRequest, GenerationResult, RequestError
from generator.runtime.config import EngineConfig
from generator.runtime.inputs import check_size, decode as decode_image
from generator.runtime.loading import ModelError, ModelFolder
from generator.runtime.lora import Adapters
from generator.runtime.samplers import SAMPLERS
from generator.runtime.scheduler import StepScheduler, Waiting
from generator.runtime.sequence import Sequence, prepare
from generator.runtime.text import conditionings
from generator.runtime.worker import decode, denoise_step

MAX_PROMPT_CHARS = 2000
MAX_STEPS = 200


def check_fields(request: GenerationRequest) -> None:
    """RequestError naming the first problem with a request's plain fields (never echoing the prompt)."""
    if not request.prompt or not request.prompt.strip():
        raise RequestError("bad_prompt", "prompt is empty")
    if len(request.prompt) > MAX_PROMPT_CHARS or len(request.negative_prompt) > MAX_PROMPT_CHARS:
        raise RequestError("bad_prompt", f"prompt is longer than {MAX_PROMPT_CHARS} characters")
    if request.sampler not in SAMPLERS:
        raise RequestError("unknown_sampler", f"unknown sampler {request.sampler!r}; choose one of "
                                              f"{', '.join(SAMPLERS)}")
    if not 1 <= request.steps <= MAX_STEPS:
        raise RequestError("bad_steps", f"steps must be 1–{MAX_STEPS}, got {request.steps}")
    if not math.isfinite(request.guidance) or request.guidance < 0:
        raise RequestError("bad_guidance", f"guidance must be a finite number ≥ 0, got {request.guidance}")
    if not 0 <= request.seed < 2**63:
        raise RequestError("bad_seed", f"seed must be 0 ≤ seed < 2^63, got {request.seed}")
    if request.strength is not None and not (math.isfinite(request.strength) and 0 <= request.strength <= 1):
        raise RequestError("bad_strength", f"strength must be in [0, 1], got {request.strength}")
    if request.mask is not None and request.init_image is None:
        raise RequestError("mask_without_image", "a mask needs an init image")
    if any(not math.isfinite(a.scale) for a in request.loras):
        raise RequestError("bad_adapter_scale", "LoRA scales must be finite numbers")


class Engine:
    """Serves the configured models on one device; not thread-safe (one engine per worker thread/process)."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.models: dict[str, ModelFolder] = {}
        self.adapters: dict[str, Adapters] = {}
        self.scheduler = StepScheduler(config.max_batch)
        self.failed: list[tuple[int, RequestError]] = []
        self.next_id = 0

    @classmethod
    def for_folder(cls, folder: str | Path | None, config: EngineConfig = EngineConfig()) -> "Engine":
        """An engine serving one folder (name: its folder name) and loading it now; ModelError if it cannot."""
        model = ModelFolder.open(folder)
        engine = cls(replace(config, models={model.path.name: model.path}, default_model=model.path.name))
        engine.models[model.path.name] = model.load(engine.config)
        engine.adapters[model.path.name] = Adapters(model, engine.config.adapters)
        return engine

    def model(self, name: str | None) -> tuple[str, ModelFolder]:
        """The named model, loaded on first use; RequestError when unknown or broken."""
        name = self.config.model_name(name)
        if name not in self.models:
            if name not in self.config.models:
                raise RequestError("unknown_model", f"unknown model {name!r}; configured: "
                                                    f"{', '.join(sorted(self.config.models)) or 'none'}")
            try:
                self.models[name] = ModelFolder.open(self.config.models[name]).load(self.config)
            except ModelError as exc:
                raise RequestError("model_unavailable", str(exc)) from None
            self.adapters[name] = Adapters(self.models[name], self.config.adapters)
        return name, self.models[name]

    def check(self, request: GenerationRequest) -> tuple:
        """All per-request checks before any generation; returns the decoded (init image, mask)."""
        check_fields(request)
        name, model = self.model(request.model)
        try:
            model.check_size(request.width, request.height)
        except ModelError as exc:
            raise RequestError("bad_size", str(exc)) from None
        if model.inpaint_unet and request.mask is None:
            raise RequestError("mask_missing", f"model {model.model_id} is an inpainting model: send an init image "
                                               "and a mask")
        for adapter in request.loras:
            if adapter.scale != 0:
                self.adapters[name].ensure(adapter.name)
            elif adapter.name not in self.config.adapters:
                raise RequestError("unknown_adapter", f"unknown LoRA adapter {adapter.name!r}")
        images = []
        for what in ("init_image", "mask"):
            data = getattr(request, what)
            image = None if data is None else decode_image(data, what, self.config.limits)
            if image is not None:
                check_size(image, what, request.width, request.height)
            images.append(image)
        return tuple(images)

    def add_request(self, request: GenerationRequest) -> int:
        """Queue a request; it joins the running batch at the next step boundary. Bad ones fail at the next step."""
        request_id, self.next_id = self.next_id, self.next_id + 1
        try:
            self.scheduler.waiting.append(Waiting(request_id, request, self.check(request)))
        except RequestError as exc:
            self.failed.append((request_id, exc))
        return request_id

    def has_unfinished(self) -> bool:
        return bool(self.failed or self.scheduler.waiting or self.scheduler.running)

    def abort_all(self) -> list[int]:
        """Drop every waiting, running and failed request; returns their ids (their owners are told by the caller)."""
        ids = [rid for rid, _ in self.failed] + [w.request_id for w in self.scheduler.waiting]
        ids += [s.request_id for s in self.scheduler.running]
        self.failed = []
        self.scheduler.waiting.clear()
        self.scheduler.running.clear()
        return ids

    def step(self) -> list[tuple[int, GenerationResult]]:
        """Admit, run one denoiser step for one group, retire finished sequences; returns what finished."""
        out: list[tuple[int, GenerationResult]] = list(self.failed)
        self.failed = []
        out += self._admit(self.scheduler.admit())
        group = self.scheduler.next_group()
        if group:
            name = group[0].model_name
            try:
                self.adapters[name].activate(group[0].request.adapter_key())
                denoise_step(self.models[name], group)
            except Exception as exc:  # a broken step fails its own group only; the message may hold no prompt
                self.scheduler.running = [s for s in self.scheduler.running if s not in group]
                out += [(s.request_id, _internal(exc)) for s in group]
        out += self._finish(self.scheduler.retire())
        return out

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Offline use: run requests to completion (step-level batching among them); results in request order."""
        ids = [self.add_request(r) for r in requests]
        results: dict[int, GenerationResult] = {}
        while self.has_unfinished():
            results.update(self.step())
        return [results[i] for i in ids]

    def _admit(self, admitted: list[Waiting]) -> list[tuple[int, GenerationResult]]:
        """Prefill: encode prompts (each distinct text once per model) and prepare each request's start state."""
        failed, by_model = [], defaultdict(list)
        for w in admitted:
            by_model[self.config.model_name(w.request.model)].append(w)
        for name, items in by_model.items():
            model = self.models[name]
            try:
                conds = conditionings(model, [(w.request.negative_prompt, w.request.prompt) for w in items],
                                      [model.draw_size(w.request.width, w.request.height) for w in items])
            except Exception as exc:
                failed += [(w.request_id, _internal(exc)) for w in items]
                continue
            for w, cond in zip(items, conds):
                try:
                    self.scheduler.running.append(prepare(w.request_id, w.request, name, model, cond, *w.inputs))
                except RequestError as exc:
                    failed.append((w.request_id, exc))
                except Exception as exc:
                    failed.append((w.request_id, _internal(exc)))
        return failed

    def _finish(self, done: list[Sequence]) -> list[tuple[int, GenerationResult]]:
        out, by_model = [], defaultdict(list)
        for s in done:
            by_model[s.model_name].append(s)
        for name, seqs in by_model.items():
            model = self.models[name]
            try:
                images = decode(model, seqs)
            except Exception as exc:
                out += [(s.request_id, _internal(exc)) for s in seqs]
                continue
            out += [(s.request_id, GeneratedImage(s.request, _to_pil(image, s.request), model.model_id))
                    for s, image in zip(seqs, images)]
        return out


def _internal(exc: Exception) -> RequestError:
    """An unexpected failure, by exception class only: library messages may quote inputs."""
    return RequestError("generation_error", f"generation failed ({exc.__class__.__name__})")


def _to_pil(image: np.ndarray, request: GenerationRequest) -> Image.Image:
    """(H, W, 3) floats → RGB at the requested size; resampled only when the model draws another size."""
    pil = Image.fromarray((image * 255).round().astype(np.uint8))
    if pil.size != (request.width, request.height):
        pil = pil.resize((request.width, request.height), Image.Resampling.LANCZOS)
    return pil

