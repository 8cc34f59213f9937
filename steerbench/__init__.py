"""steerbench: compare LLM steering methods head-to-head on shared metrics.

The public API lives in submodules (``steerbench.models``, ``steerbench.generation``,
``steerbench.capture``, ...); importing the package itself stays cheap so that the CLI
answers ``--help`` without loading torch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("steerbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
