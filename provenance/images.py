"""Careful image decoding for untrusted uploads: size and pixel limits, format sniffing, full decode."""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

from hallmark.errors import HttpError

MIME_BY_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class ImageError(HttpError, ValueError):
    """An image we refuse, with the HTTP status that says why (413 too large, 415 not an image, 422 broken)."""


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # (h, w, 3) uint8
    mime: str

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def decode(data: bytes, limits: ImageLimits = ImageLimits()) -> DecodedImage:
    """Decode PNG/JPEG/WebP bytes to RGB, or raise ImageError; the pixel limit is checked before decoding."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > limits.max_bytes:
        raise ImageError(413, f"file is {len(data)} bytes; the limit is {limits.max_bytes}")
    if not data:
        raise ImageError(422, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(415, "not a PNG, JPEG or WebP image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(413, f"image has more than {limits.max_pixels} pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(422, f"unreadable image: {exc}") from None
    mime = MIME_BY_FORMAT.get(img.format or "")
    if mime is None:
        raise ImageError(415, f"unsupported image format {img.format}; send PNG, JPEG or WebP")
    w, h = img.size
    if w * h > limits.max_pixels:  # header only so far: a decompression bomb is stopped here
        raise ImageError(413, f"image is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}")
    if getattr(img, "n_frames", 1) > 1:
        raise ImageError(422, "animated images are not supported")
    try:
        img.load()
        rgb = np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(422, f"truncated or corrupt image: {exc}") from None
    return DecodedImage(rgb=rgb, mime=mime)


def encode_png(rgb: np.ndarray) -> bytes:
    """Deterministic PNG of an RGB array, with no metadata."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    """JPEG of an RGB array, with no metadata; quality 95 keeps the watermark intact."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
