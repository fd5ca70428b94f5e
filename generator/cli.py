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
    gen.add_argument("--sampler", default="dpmpp_2m", help="ddim | euler | dpmpp_2m")
    gen.add_argument("--size", type=int, default=None, help="output side in pixels (default: the model's)")
    gen.add_argument("--model", default=None, help="local diffusers-format model folder (default: embedded)")
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


def _load_generator(model: str | None, max_batch: int = 8):
    import diffusers
    import transformers

    from generator.runtime import Generator, ModelError

    diffusers.utils.logging.set_verbosity_error()  # a CLI prints its result, not library chatter
    transformers.utils.logging.set_verbosity_error()
    try:
        return Generator.load(model, max_batch=max_batch)
    except ModelError as exc:
        raise CommandError(str(exc)) from None


def run_generate(args: argparse.Namespace) -> int:
    from generator.api import GenerationRequest

    gen = _load_generator(args.model)
    size = args.size or gen.model.output_size or gen.model.native_size
    request = GenerationRequest(prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
                                guidance=args.guidance, sampler=args.sampler, width=size, height=size)
    try:
        (image,) = gen.generate([request])
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(image.png_bytes())
    print(json.dumps({"path": str(args.out), "model_id": image.model_id, "seed": args.seed}))
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

    from generator.api import GenerationRequest
    from generator.shapes.captions import parse_prompt
    from generator.shapes.checker import check, score

    path = args.prompts or Path(__file__).parent / "shapes" / "prompts" / "eval.tsv"
    rows = read_prompt_file(path)
    try:
        prompts = [parse_prompt(text, category) for category, text in rows]
    except ValueError as exc:
        raise CommandError(f"{path}: {exc}") from None
    gen = _load_generator(args.model, max_batch=args.batch)
    size = gen.model.output_size or gen.model.native_size
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for start in tqdm(range(0, len(rows), args.batch), desc="eval shapes", unit="batch", file=sys.stderr):
        chunk = list(range(start, min(start + args.batch, len(rows))))
        requests = [GenerationRequest(prompt=rows[i][1], seed=args.seed + i, steps=args.steps, guidance=args.guidance,
                                      sampler=args.sampler, width=size, height=size) for i in chunk]
        for i, image in zip(chunk, gen.generate(requests)):
            (args.out / f"{i:04d}.png").write_bytes(image.png_bytes())
            results.append(check(np.asarray(image.image), prompts[i]))
    seen = score([r for r, p in zip(results, prompts) if not p.uses_held_out])
    held = [r for r, p in zip(results, prompts) if p.uses_held_out]
    held_report = score(held) if held else None
    summary = {"model_id": gen.model_id, "prompts": len(results), "steps": args.steps, "guidance": args.guidance,
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
