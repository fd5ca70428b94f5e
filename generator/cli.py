"""`hallmark generate` and `hallmark eval shapes`: the generator without Kafka."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from generator import DEFAULT_GUIDANCE
from hallmark.cli import CommandError


def register(subparsers) -> None:
    gen = subparsers.add_parser("generate", help="generate one image from a prompt (no Kafka)")
    gen.add_argument("prompt")
    gen.add_argument("-o", "--out", required=True, type=Path, help="output PNG path")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    gen.add_argument("--negative", default="", help="negative prompt")
    gen.add_argument("--sampler", default="dpmpp_2m", help="ddim | euler | dpmpp_2m (an unknown name lists them)")
    gen.add_argument("--width", type=int, default=None, help="output width in pixels (default: the model's)")
    gen.add_argument("--height", type=int, default=None, help="output height in pixels (default: the model's)")
    gen.add_argument("--size", type=int, default=None, help="square output side (shorthand for --width/--height)")
    gen.add_argument("--model", default=None, help="local diffusers-format SD 1.x/2.x or SDXL folder "
                                                    "(default: the embedded shapes model)")
    gen.add_argument("--init-image", type=Path, default=None, help="img2img / inpainting input image (PNG, JPEG)")
    gen.add_argument("--mask", type=Path, default=None, help="inpainting mask, white = repaint (needs --init-image)")
    gen.add_argument("--strength", type=float, default=None,
                     help="how far to move from the init image, 0–1 (default 0.8 img2img, 1.0 inpainting)")
    gen.add_argument("--lora", action="append", default=[], metavar="NAME:SCALE",
                     help="apply a LoRA adapter (a folder in --lora-dir, or a path); repeatable")
    gen.add_argument("--lora-dir", type=Path, default=None, help="folder of LoRA adapter folders")
    gen.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    gen.add_argument("--dtype", default="auto", help="auto | float32 | float16 | bfloat16")
    gen.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA)")
    gen.set_defaults(func=run_generate)

    ev = subparsers.add_parser("eval", help="score a model with an objective checker")
    ev_sub = ev.add_subparsers(dest="eval_kind", metavar="KIND", required=True)
    shapes = ev_sub.add_parser("shapes", help="generate a prompt file and score it with the shapes-world checker")
    shapes.add_argument("--prompts", type=Path, default=None,
                        help="one prompt per line, optional 'category<TAB>' prefix, '#' comments "
                             "(default: the bundled eval set)")
    shapes.add_argument("--out", type=Path, required=True, help="folder for 0000.png, 0001.png, …")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--steps", type=int, default=20)
    shapes.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    shapes.add_argument("--sampler", default="dpmpp_2m")
    shapes.add_argument("--batch", type=int, default=8)
    shapes.add_argument("--model", default=None)
    shapes.set_defaults(func=run_eval_shapes)


def _load_engine(model: str | None, config=None):
    import diffusers
    import transformers

    from generator.runtime import Engine, EngineConfig, ModelError

    diffusers.utils.logging.set_verbosity_error()  # a CLI prints its result, not library chatter
    transformers.utils.logging.set_verbosity_error()
    try:
        return Engine.for_folder(model, config or EngineConfig())
    except (ModelError, ValueError) as exc:
        raise CommandError(str(exc)) from None


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def parse_loras(specs: list[str], lora_dir: Path | None) -> dict[str, tuple[Path, float]]:
    """NAME:SCALE (SCALE defaults to 1) → {name: (folder, scale)}; NAME is a folder in lora_dir, or a path."""
    out = {}
    for spec in specs:
        name, _, scale = spec.rpartition(":") if ":" in spec else (spec, "", "1")
        try:
            value = float(scale)
        except ValueError:
            raise CommandError(f"--lora {spec}: the scale must be a number (NAME:SCALE)") from None
        folder = (lora_dir / name) if lora_dir else Path(name)
        if not folder.is_dir():
            raise CommandError(f"--lora {spec}: no adapter folder {folder}")
        out[folder.name] = (folder, value)
    return out


def _one(engine, request):
    """The single result, or a CommandError naming the problem."""
    from generator.api import RequestError

    (result,) = engine.generate([request])
    if isinstance(result, RequestError):
        raise CommandError(str(result))
    return result


def run_generate(args: argparse.Namespace) -> int:
    from generator.api import GenerationRequest, Lora
    from generator.runtime import EngineConfig

    loras = parse_loras(args.lora, args.lora_dir)
    config = EngineConfig(adapters={name: folder for name, (folder, _) in loras.items()}, device=args.device,
                          dtype=args.dtype, compile=args.compile, max_batch=1)
    engine = _load_engine(args.model, config)
    model = engine.model(None)[1]
    default = model.output_size or model.native_size
    width, height = args.width or args.size or default, args.height or args.size or default
    request = GenerationRequest(prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
                                guidance=args.guidance, sampler=args.sampler, width=width, height=height,
                                strength=args.strength, loras=tuple(Lora(n, s) for n, (_, s) in loras.items()),
                                init_image=_read(args.init_image, "init image"), mask=_read(args.mask, "mask"))
    image = _one(engine, request)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(image.png_bytes())
    print(json.dumps({"path": str(args.out), "model_id": image.model_id, "seed": args.seed,
                      "width": image.image.width, "height": image.image.height}))
    return 0


def read_prompt_file(path: Path) -> list[tuple[str | None, str]]:
    """(category or None, prompt) per non-comment line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read prompt file {path}: {exc}") from None
    rows = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        category, _, prompt = line.rpartition("\t")
        rows.append((category.strip() or None, prompt.strip()))
    if not rows:
        raise CommandError(f"{path} holds no prompts")
    return rows


def run_eval_shapes(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from generator.api import GenerationRequest, RequestError
    from generator.runtime import EngineConfig
    from generator.shapes.captions import parse_prompt
    from generator.shapes.checker import check, score

    path = args.prompts or Path(__file__).parent / "shapes" / "prompts" / "eval.tsv"
    rows = read_prompt_file(path)
    try:
        prompts = [parse_prompt(text, category) for category, text in rows]
    except ValueError as exc:
        raise CommandError(f"{path}: {exc}") from None
    engine = _load_engine(args.model, EngineConfig(max_batch=args.batch))
    model = engine.model(None)[1]
    size = model.output_size or model.native_size
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for start in tqdm(range(0, len(rows), args.batch), desc="eval shapes", unit="batch", file=sys.stderr):
        chunk = list(range(start, min(start + args.batch, len(rows))))
        requests = [GenerationRequest(prompt=rows[i][1], seed=args.seed + i, steps=args.steps, guidance=args.guidance,
                                      sampler=args.sampler, width=size, height=size) for i in chunk]
        for i, image in zip(chunk, engine.generate(requests)):
            if isinstance(image, RequestError):
                raise CommandError(str(image))
            (args.out / f"{i:04d}.png").write_bytes(image.png_bytes())
            results.append(check(np.asarray(image.image), prompts[i]))
    seen = score([r for r, p in zip(results, prompts) if not p.uses_held_out])
    held = [r for r, p in zip(results, prompts) if p.uses_held_out]
    held_report = score(held) if held else None
    summary = {"model_id": model.model_id, "prompts": len(results), "steps": args.steps, "guidance": args.guidance,
               "sampler": args.sampler,
               "seen": {"per_category": seen.per_category, "overall": seen.overall, "prompts": len(results) - len(held)},
               "held_out": None if held_report is None else {"per_category": held_report.per_category,
                                                             "overall": held_report.overall, "prompts": len(held)}}
    (args.out / "report.json").write_text(json.dumps(summary, indent=2))
    # one line per image, so a reader can see what failed and why (the checker's own reason)
    lines = ["image\tcategory\theld_out\tpassed\treason"] + [
        f"{i:04d}.png\t{p.category}\t{int(p.uses_held_out)}\t{int(r.passed)}\t{r.reason}"
        for i, (r, p) in enumerate(zip(results, prompts))]
    (args.out / "results.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    return 0
