"""survey-classifier: classify radio survey cutouts at catalogue scale."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("survey-classifier")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
