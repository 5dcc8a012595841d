"""The version of qptwisted (read by the build and by the engine's greeting)."""

__version__ = "0.2.0"
