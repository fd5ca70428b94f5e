"""Init images and masks: careful decoding (caps checked from the header), size checks, pipeline preprocessing."""
from __future__ import annotations

import io
import warnings

import torch
from PIL import Image

from generator.api import RequestError
from generator.runtime.config import ImageLimits


def decode(data: bytes | None, what: str, limits: ImageLimits) -> Image.Image:
    """Bytes → RGB image, or a RequestError with code `<what>_missing|_too_large|_corrupt`; bombs never decode."""
    if not data:
        raise RequestError(f"{what}_missing", f"{what} is missing or empty")
    if len(data) > limits.max_bytes:
        raise RequestError(f"{what}_too_large", f"{what} is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > limits.max_pixels:  # from the header, before any pixel is decoded
                raise RequestError(f"{what}_too_large", f"{what} is {w}×{h} pixels; the limit is {limits.max_pixels}")
            img.load()
            return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(f"{what}_too_large", f"{what} is a decompression bomb") from None
    except RequestError:
        raise
    except Exception as exc:  # PIL raises many kinds for garbage; its messages never hold prompt text
        raise RequestError(f"{what}_corrupt", f"{what} is not a readable image ({exc.__class__.__name__})") from None


def check_size(image: Image.Image, what: str, width: int, height: int) -> None:
    if image.size != (width, height):
        raise RequestError(f"{what}_wrong_size", f"{what} is {image.width}×{image.height}; the request asks for "
                                                 f"{width}×{height}")


def image_tensor(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """As the pipelines' VaeImageProcessor: RGB in [-1, 1].  # (1, 3, H, W)"""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor().preprocess(image, height=height, width=width).to(torch.float32)


def mask_tensor(mask: Image.Image, width: int, height: int) -> torch.Tensor:
    """As the inpaint pipelines' mask processor: grayscale, binarised at 0.5 (1 = repaint).  # (1, 1, H, W)"""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True)
    return processor.preprocess(mask, height=height, width=width)
