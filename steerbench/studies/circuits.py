"""Circuit analyses: where a neuron circuit sits, and how stable it is under resampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from steerbench.files import save_figure


def layer_distribution(layers: torch.Tensor, n_layers: int) -> dict[str, Any]:
    counts = torch.bincount(layers, minlength=n_layers).tolist()
    total = max(1, len(layers))
    last_tenth = n_layers - max(1, math.ceil(0.1 * n_layers))
    last_quarter = n_layers - max(1, math.ceil(0.25 * n_layers))
    return {
        "counts": counts,
        "share_last_10pct": sum(counts[last_tenth:]) / total,
        "share_last_quartile": sum(counts[last_quarter:]) / total,
        "last_10pct_layers": f"{last_tenth}-{n_layers - 1}",
        "last_quartile_layers": f"{last_quarter}-{n_layers - 1}",
    }


def circuit_pairs(artifact) -> set[tuple[int, int]]:
    """The (layer, neuron) pairs of a neuron-circuit artifact (CNA and its variants)."""
    return set(zip(artifact.tensors["layers"].tolist(), artifact.tensors["neurons"].tolist()))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def stability(
    fit: Callable[[list[str], list[str]], Any],
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    resamples: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Jaccard overlap of circuits that ``fit`` (the configured method's own fit, so its
    selection, excluded layers and global-neuron filter all apply) finds on disjoint halves
    of the prompts, and on bootstrap resamples against the circuit of all the prompts."""
    generator = torch.Generator().manual_seed(seed)
    positive, negative = list(positive), list(negative)

    def circuit(pos_index: torch.Tensor, neg_index: torch.Tensor) -> set[tuple[int, int]]:
        return circuit_pairs(
            fit([positive[i] for i in pos_index], [negative[i] for i in neg_index])
        )

    full = circuit(torch.arange(len(positive)), torch.arange(len(negative)))
    halves = []
    for _ in range(resamples):
        p = torch.randperm(len(positive), generator=generator)
        n = torch.randperm(len(negative), generator=generator)
        hp, hn = len(p) // 2, len(n) // 2
        halves.append(jaccard(circuit(p[:hp], n[:hn]), circuit(p[hp:], n[hn:])))
    boots = []
    for _ in range(resamples):
        p = torch.randint(len(positive), (len(positive),), generator=generator)
        n = torch.randint(len(negative), (len(negative),), generator=generator)
        boots.append(jaccard(full, circuit(p, n)))
    return {
        "circuit_neurons": len(full),
        "halves_mean": sum(halves) / resamples,
        "halves_min": min(halves),
        "bootstrap_mean": sum(boots) / resamples,
        "bootstrap_min": min(boots),
        "resamples": resamples,
    }


def plot_layers(distributions: dict[str, dict], n_layers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.4
    for offset, (name, dist) in zip((-width / 2, width / 2), distributions.items()):
        share = [c / max(1, sum(dist["counts"])) for c in dist["counts"]]
        ax.bar([i + offset for i in range(n_layers)], share, width=width, label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of circuit neurons")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
