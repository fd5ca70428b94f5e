"""Messages between the generation engine and its callers (plain dataclasses, no torch)."""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass

from PIL import Image, PngImagePlugin

from generator import DEFAULT_GUIDANCE

SAMPLERS = ("ddim", "euler", "dpmpp_2m")


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make. `width`/`height` are the output size (the embedded model draws 64×64 and upscales)."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = DEFAULT_GUIDANCE
    sampler: str = "dpmpp_2m"
    width: int = 256
    height: int = 256

    def batch_key(self) -> tuple:
        """Requests with equal keys may share one denoiser batch and one scheduler instance."""
        return (self.steps, self.sampler, self.width, self.height)


@dataclass
class GeneratedImage:
    request: GenerationRequest
    image: Image.Image  # RGB, output size
    model_id: str

    def png_bytes(self, include_prompt: bool = True) -> bytes:
        """PNG with the generation parameters in a `hallmark` tEXt chunk. The CLI's files keep the prompt (they are
        the user's); the platform's stored images leave it out, since blobs outlive requests and reach reviewers."""
        params = asdict(self.request)
        if not include_prompt:
            params.pop("prompt")
            params.pop("negative_prompt")
        info = PngImagePlugin.PngInfo()
        info.add_text("hallmark", json.dumps({**params, "model_id": self.model_id}))
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", pnginfo=info)
        return buf.getvalue()
