"""Messages between the generation engine and its callers (plain dataclasses, no torch)."""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field

from PIL import Image, PngImagePlugin

from generator import DEFAULT_GUIDANCE


@dataclass(frozen=True)
class Lora:
    """A LoRA adapter by its configured name, applied to the UNet at `scale` (0 is the same as no adapter)."""

    name: str
    scale: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make. `width`/`height` are the output size (the embedded model draws 64×64 and upscales).

    `init_image` / `mask` are encoded image bytes (PNG, JPEG, WebP): img2img with an init image, inpainting with
    both (white = repaint). `strength` None means the pipeline default (0.8 img2img, 1.0 inpainting).
    """

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = DEFAULT_GUIDANCE
    sampler: str = "dpmpp_2m"
    width: int = 256
    height: int = 256
    model: str | None = None  # a configured model name; None: the engine's default
    strength: float | None = None
    loras: tuple[Lora, ...] = ()
    init_image: bytes | None = field(default=None, repr=False)
    mask: bytes | None = field(default=None, repr=False)

    def adapter_key(self) -> tuple[tuple[str, float], ...]:
        """The adapters that change the UNet; scale 0 drops out, so it batches with (and equals) no adapter."""
        return tuple(sorted((a.name, float(a.scale)) for a in self.loras if a.scale != 0))

    def metadata(self, include_prompt: bool = True) -> dict:
        """JSON-able parameters; input images by sha256, the prompt only when asked."""
        params = {k: v for k, v in asdict(self).items() if k not in ("init_image", "mask")}
        for name in ("init_image", "mask"):
            data = getattr(self, name)
            params[name] = hashlib.sha256(data).hexdigest() if data is not None else None
        if not include_prompt:
            params.pop("prompt")
            params.pop("negative_prompt")
        return params


class RequestError(ValueError):
    """A request this engine cannot serve; `code` is a stable reason code, the message never holds prompt text."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code

    def reason(self) -> str:
        return f"{self.code}: {self}"


@dataclass
class GeneratedImage:
    request: GenerationRequest
    image: Image.Image  # RGB, output size
    model_id: str

    def png_bytes(self, include_prompt: bool = True) -> bytes:
        """PNG with the generation parameters in a `hallmark` tEXt chunk. The CLI's files keep the prompt (they are
        the user's); the platform's stored images leave it out, since blobs outlive requests and reach reviewers."""
        info = PngImagePlugin.PngInfo()
        info.add_text("hallmark", json.dumps({**self.request.metadata(include_prompt), "model_id": self.model_id}))
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", pnginfo=info)
        return buf.getvalue()


GenerationResult = GeneratedImage | RequestError
