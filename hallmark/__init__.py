"""Hallmark command line, the one config root and local operations (broker, stack, supervisor)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hallmark")  # written once, in pyproject.toml
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
