"""The package's version: a leaf module, so a checkpoint records it without importing the package root."""

__version__ = "0.2.0"
