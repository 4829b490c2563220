"""medcite's version: the installed package's (pyproject.toml), for `medcite --version` and GET /v1/models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medcite")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.2.0"
