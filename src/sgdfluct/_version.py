"""The package version; imported by whoever needs it (nothing imports back from the root)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sgdfluct")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
