"""Input checks: what a gate refuses to judge (empty, huge, binary prompts; broken or oversized images)."""
from __future__ import annotations

import io
import unicodedata
import warnings
from pathlib import Path

from PIL import Image

from .policy import Limits


class ImageInputError(ValueError):
    """The bytes are not a usable image: truncated, not an image, too large, or a decompression bomb."""


def prompt_problem(prompt: object, limits: Limits) -> str | None:
    """Why this prompt cannot be screened, or None if it can. Never echoes the prompt."""
    if isinstance(prompt, (bytes, bytearray)):
        try:
            prompt = bytes(prompt).decode("utf-8")
        except UnicodeDecodeError:
            return "prompt is not valid UTF-8"
    if not isinstance(prompt, str):
        return f"prompt must be text, not {type(prompt).__name__}"
    if not prompt.strip():
        return "prompt is empty"
    if len(prompt) > limits.max_prompt_chars:
        return f"prompt is too long ({len(prompt)} > {limits.max_prompt_chars} characters)"
    for ch in prompt:
        cat = unicodedata.category(ch)
        if cat == "Cs":
            return "prompt holds undecodable bytes (lone surrogates)"
        if cat == "Cc" and ch not in "\t\n\r":
            return "prompt holds binary control characters"
    return None


def as_text(prompt: str | bytes) -> str:
    """The prompt as str (call only after prompt_problem returned None)."""
    return prompt.decode("utf-8") if isinstance(prompt, (bytes, bytearray)) else prompt


def load_image(source: bytes | str | Path | Image.Image, limits: Limits) -> Image.Image:
    """Decode fully into an RGB image, refusing bombs before pixels are decoded; ImageInputError on any problem."""
    if isinstance(source, Image.Image):
        img = source
    else:
        try:
            data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        except OSError as exc:
            raise ImageInputError(f"cannot read image: {exc.strerror or exc}") from exc
        if not data:
            raise ImageInputError("image is empty (0 bytes)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageInputError(f"image is a decompression bomb: {exc}") from exc
        except Exception as exc:  # PIL raises many types for garbage input
            raise ImageInputError(f"not a readable image: {type(exc).__name__}") from exc
    w, h = img.size
    if w * h > limits.max_image_pixels:
        raise ImageInputError(f"image is too large ({w}x{h} > {limits.max_image_pixels} pixels; decompression bomb?)")
    if min(w, h) < limits.min_image_side:
        raise ImageInputError(f"image is too small ({w}x{h}; need at least {limits.min_image_side} px a side)")
    try:
        img.load()
        return img.convert("RGB")
    except Exception as exc:
        raise ImageInputError(f"image data is truncated or corrupt: {type(exc).__name__}: {exc}") from exc
