"""Image sets and edits for the provenance benchmarks: scikit-image photos, shapes-world renders, sinusoids."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageEnhance

# scikit-image's bundled images that load offline (greyscale ones are turned to RGB).
PHOTO_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
                 "coins", "camera", "moon", "brick", "grass", "gravel", "cell", "clock")
SIDE = 256


def _source(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def photo_patches(name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two 256×256 views of a photo to register (top-left and bottom-right squares of 70% of the short side) and
    four zoomed quadrants as unrelated images."""
    im = _source(name)
    w, h = im.size
    side = round(0.7 * min(w, h))
    views = [im.crop((0, 0, side, side)), im.crop((w - side, h - side, w, h))]
    quads = [im.crop((x, y, x + w // 2, y + h // 2)) for x in (0, w // 2) for y in (0, h // 2)]
    resize = lambda v: np.asarray(v.resize((SIDE, SIDE), Image.LANCZOS))  # noqa: E731
    return [resize(v) for v in views], [resize(q) for q in quads]


def scene(seed: int):
    """A shapes-world prompt and scene, deterministic from the seed."""
    from generator.shapes.captions import CATEGORIES, sample_prompt
    from generator.shapes.scenes import scene_for_prompt

    rng = np.random.default_rng(seed)
    prompt = sample_prompt(rng, CATEGORIES[seed % len(CATEGORIES)], paraphrase=False, bg_prob=0.5)
    return prompt, scene_for_prompt(prompt, rng)


def draw(s) -> np.ndarray:
    from generator.shapes.render import render, upscale

    return upscale(render(s), SIDE)


def same_prompt_other_layout(seed: int) -> np.ndarray:
    """A near-duplicate generation: the same prompt as `scene(seed)`, laid out again."""
    from generator.shapes.scenes import scene_for_prompt

    prompt, _ = scene(seed)
    return draw(scene_for_prompt(prompt, np.random.default_rng(seed + 10_000)))


def one_object_moved(seed: int, px: float = 3.0) -> np.ndarray:
    """A nearer duplicate: the same scene with its first object moved `px` pixels (of 64) right and down."""
    _, s = scene(seed)
    first = dataclasses.replace(s.objects[0], cx=s.objects[0].cx + px, cy=s.objects[0].cy + px)
    return draw(dataclasses.replace(s, objects=(first, *s.objects[1:])))


def sinusoid(phase: float, freq: float = 3.0) -> np.ndarray:
    """A smooth two-dimensional sinusoid texture (the kind pHash confused at distance 8)."""
    y, x = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    wave = np.sin(2 * np.pi * freq * x + phase) * np.cos(2 * np.pi * freq * y + phase / 2)
    base = 128 + 90 * wave
    return np.stack([base, 255 - base, np.full_like(base, 128)], -1).clip(0, 255).astype(np.uint8)


def noise(seed: int) -> np.ndarray:
    """Smoothed random noise (no structure shared with anything)."""
    small = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), np.uint8)
    return np.asarray(Image.fromarray(small).resize((SIDE, SIDE), Image.BICUBIC))


# --- edits: signed file bytes in, bytes out -------------------------------------------------------------------

def _rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _save(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _resize(im: Image.Image, f: float) -> Image.Image:
    return im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.BILINEAR)


def _crop(im: Image.Image, f: float) -> Image.Image:
    dx, dy = round(im.width * f / 2), round(im.height * f / 2)  # f of each side's length, half from each edge
    return im.crop((dx, dy, im.width - dx, im.height - dy))


def _edit(fn, fmt: str = "PNG", **kw):
    return lambda data: _save(fn(_rgb(data)), fmt, **kw)


EDITS = {
    "metadata strip (PNG re-save)": _edit(lambda im: im),
    "PNG → WebP (q80)": _edit(lambda im: im, "WEBP", quality=80),
    "JPEG q90": _edit(lambda im: im, "JPEG", quality=90),
    "JPEG q75": _edit(lambda im: im, "JPEG", quality=75),
    "JPEG q50": _edit(lambda im: im, "JPEG", quality=50),
    "JPEG q30": _edit(lambda im: im, "JPEG", quality=30),
    "resize 75%": _edit(lambda im: _resize(im, 0.75)),
    "resize 50%": _edit(lambda im: _resize(im, 0.5)),
    "resize 25%": _edit(lambda im: _resize(im, 0.25)),
    "crop 10%": _edit(lambda im: _crop(im, 0.10)),
    "crop 25%": _edit(lambda im: _crop(im, 0.25)),
    "crop 10% off-centre (2% left/top, 8% right/bottom)": _edit(
        lambda im: im.crop((round(im.width * 0.02), round(im.height * 0.02), round(im.width * 0.92),
                            round(im.height * 0.92)))),
    "rotate +5°": _edit(lambda im: im.rotate(5, Image.BILINEAR)),
    "rotate −5°": _edit(lambda im: im.rotate(-5, Image.BILINEAR)),
    "brightness +20%": _edit(lambda im: ImageEnhance.Brightness(im).enhance(1.2)),
    "brightness −20%": _edit(lambda im: ImageEnhance.Brightness(im).enhance(0.8)),
    "contrast +20%": _edit(lambda im: ImageEnhance.Contrast(im).enhance(1.2)),
    "contrast −20%": _edit(lambda im: ImageEnhance.Contrast(im).enhance(0.8)),
    "screenshot-like (resize 80% + JPEG q85)": _edit(lambda im: _resize(im, 0.8), "JPEG", quality=85),
}
ACCEPTANCE_EDITS = ("JPEG q50", "resize 50%", "crop 10%")
