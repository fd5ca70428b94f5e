"""The generator runtime: load a local diffusers-format SD-family model and run batches of requests."""
from generator.runtime.engine import Generator
from generator.runtime.loading import ModelError, ModelFolder

__all__ = ["Generator", "ModelError", "ModelFolder"]
