"""steerbench: compare LLM steering methods head-to-head on shared metrics.

The plugin API sits at the top: ``steerbench.method``, ``steerbench.metric``,
``steerbench.registry``, ``steerbench.interventions``, ``steerbench.vector_steering``,
``steerbench.options``, ``steerbench.testing``, ``steerbench.errors`` and
``steerbench.files``, with ``judge`` (the rubric judge metrics use) beside them. Everything
else lives in one sub-package per floor, lowest first: ``model`` (loading, chat format,
generation, capture), ``stats`` (paired tests, ranks, power), ``run`` (config, prompt sets,
plan, runner, results), ``publish`` (leaderboard), ``studies`` (the paper's reproduction,
the bench), ``integrations`` (lm-eval, SAE training) and ``cli``. Importing the package
stays cheap so that ``--help`` does not load torch.
"""

from importlib.metadata import PackageNotFoundError, version

from steerbench import _moved

_moved.install()

try:
    __version__ = version("steerbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
