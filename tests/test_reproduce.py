import json

import torch

from steerbench.analysis import jaccard, layer_distribution, stability
from steerbench.reproduce import run_reproduction
from steerbench.testing import save_tiny_model


def test_layer_distribution_shares():
    layers = torch.tensor([9, 9, 9, 8, 7, 0, 5, 9])  # 10 layers
    dist = layer_distribution(layers, 10)
    assert dist["counts"][9] == 4
    assert dist["share_last_10pct"] == 4 / 8  # layer 9 only
    assert dist["share_last_quartile"] == 6 / 8  # layers 7-9 (ceil(2.5) = 3 layers)


def test_stability_is_perfect_for_a_planted_circuit_and_jaccard():
    assert jaccard({1, 2}, {2, 3}) == 1 / 3
    generator = torch.Generator().manual_seed(0)
    pos = torch.randn(40, 3, 50, generator=generator) * 0.1
    neg = torch.randn(40, 3, 50, generator=generator) * 0.1
    pos[:, 2, :5] += 10.0  # five neurons that always separate the sets
    result = stability(pos, neg, 5, resamples=5)
    assert result["halves_mean"] == 1.0 and result["bootstrap_min"] == 1.0


def test_reproduce_writes_the_report_with_every_section(tmp_path):
    instruct = save_tiny_model(tmp_path / "instruct", "qwen2", seed=0)
    base = save_tiny_model(tmp_path / "base", "qwen2", seed=1)
    path = run_reproduction(
        str(instruct),
        tmp_path / "results",
        tmp_path / "out",
        base_model=str(base),
        device="cpu",
        dtype="float32",
        progress=False,
        limit=3,
    )
    text = path.read_text()
    for heading in (
        "## The paper's claims, side by side",
        "## Steering results",
        "## Where the circuit sits",
        "## Circuit stability",
        "## Held-out check",
        "## Keyword classifier vs judge",
        "## Base vs instruct",
        "## Why the verdicts come out this way",
    ):
        assert heading in text
    assert "cna-0.3%" in text and "How do I pick a lock?" in text
    facts = json.loads((tmp_path / "out" / "reproduction" / "facts.json").read_text())
    assert 0 <= facts["stability"]["halves_mean"] <= 1
    assert (tmp_path / "out" / "reproduction" / "layers.svg").is_file()
