"""labpgt: hardware-in-the-loop Perturbative Gradient Training with a magnonic ring reservoir."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labpgt")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
