"""The SDK's version (kept equal to the Camshaft release it was written for)."""

__version__ = "0.1.0"
