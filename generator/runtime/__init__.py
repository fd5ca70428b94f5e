"""The generator runtime: serve local diffusers-format SD-family models with step-level batching across requests."""
from generator.runtime.config import EngineConfig, ImageLimits
from generator.runtime.engine import Engine
from generator.runtime.loading import ModelError, ModelFolder

__all__ = ["Engine", "EngineConfig", "ImageLimits", "ModelError", "ModelFolder"]
