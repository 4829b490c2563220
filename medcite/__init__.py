"""medcite: retrieval-augmented medical question answering with cited passages. The CLI lives in medcite.cli."""

from core.version import __version__ as __version__
