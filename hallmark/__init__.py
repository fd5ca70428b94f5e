"""Hallmark command line and shared configuration."""
__version__ = "0.1.0"
