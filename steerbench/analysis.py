"""Circuit analyses: where a neuron circuit sits, and how stable it is under resampling."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch


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


def top_pairs(delta: torch.Tensor, k: int) -> set[tuple[int, int]]:
    flat = torch.topk(delta.abs().flatten(), k).indices
    width = delta.shape[1]
    return set(zip((flat // width).tolist(), (flat % width).tolist()))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def stability(
    pos: torch.Tensor, neg: torch.Tensor, k: int, *, resamples: int = 20, seed: int = 0
) -> dict[str, float]:
    """Jaccard overlap of top-k circuits: disjoint halves, and bootstrap vs full data."""
    generator = torch.Generator().manual_seed(seed)
    full = top_pairs(pos.mean(0) - neg.mean(0), k)
    halves = []
    for _ in range(resamples):
        p, n = (
            torch.randperm(len(pos), generator=generator),
            torch.randperm(len(neg), generator=generator),
        )
        hp, hn = len(p) // 2, len(n) // 2
        a = top_pairs(pos[p[:hp]].mean(0) - neg[n[:hn]].mean(0), k)
        b = top_pairs(pos[p[hp:]].mean(0) - neg[n[hn:]].mean(0), k)
        halves.append(jaccard(a, b))
    boots = []
    for _ in range(resamples):
        p = torch.randint(len(pos), (len(pos),), generator=generator)
        n = torch.randint(len(neg), (len(neg),), generator=generator)
        boots.append(jaccard(full, top_pairs(pos[p].mean(0) - neg[n].mean(0), k)))
    return {
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
    fig.savefig(path.with_suffix(".png"), dpi=110)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)
