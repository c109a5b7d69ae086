"""vdial: cache frozen vision-encoder features once, train dialog models on them many times."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vdial")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
