import json

import pytest
import torch
import yaml

from steerbench.errors import SteerbenchError
from steerbench.method import Artifact
from steerbench.run.config import configs_root, load_config
from steerbench.studies.circuits import circuit_pairs, jaccard, layer_distribution, stability
from steerbench.studies.reproduce import (
    reproduce_config,
    require_cell,
    run_reproduction,
    study_config,
)
from steerbench.studies.reproduction_report import render
from steerbench.testing import save_tiny_model


def test_layer_distribution_shares():
    layers = torch.tensor([9, 9, 9, 8, 7, 0, 5, 9])  # 10 layers
    dist = layer_distribution(layers, 10)
    assert dist["counts"][9] == 4
    assert dist["share_last_10pct"] == 4 / 8  # layer 9 only
    assert dist["share_last_quartile"] == 6 / 8  # layers 7-9 (ceil(2.5) = 3 layers)


def circuit_artifact(pairs):
    layers, neurons = zip(*sorted(pairs)) if pairs else ((), ())
    return Artifact("cna", {"layers": torch.tensor(layers), "neurons": torch.tensor(neurons)})


def test_stability_refits_with_the_given_fit_on_halves_and_resamples():
    assert jaccard({1, 2}, {2, 3}) == 1 / 3
    calls = []

    def planted(pos, neg):  # always the same circuit: perfectly stable
        calls.append((len(pos), len(neg)))
        return circuit_artifact({(2, 0), (2, 1), (3, 4)})

    result = stability(
        planted, [f"p{i}" for i in range(10)], [f"n{i}" for i in range(8)], resamples=5
    )
    assert result["halves_mean"] == 1.0 and result["bootstrap_min"] == 1.0
    assert result["circuit_neurons"] == 3
    assert calls[0] == (10, 8) and (5, 4) in calls and len(calls) == 1 + 2 * 5 + 5

    def first_prompt_decides(pos, neg):  # the circuit depends on which prompts it sees
        return circuit_artifact({(0, int(pos[0][1:]))})

    assert (
        stability(first_prompt_decides, [f"p{i}" for i in range(10)], ["n"] * 4)["halves_mean"]
        == 0.0
    )


def test_a_config_without_cna_or_caa_is_refused_before_any_work():
    config = load_config("default")
    config.methods = [m for m in config.methods if m.name != "caa"]
    with pytest.raises(SteerbenchError, match="no unlabelled caa method"):
        reproduce_config(config, "tiny")
    with pytest.raises(SteerbenchError, match="no cell caa @ -8"):
        require_cell({("cna", 0.0): {}}, "caa", -8.0, "results/x")


def test_the_study_config_is_a_new_config_and_the_loaded_one_is_left_alone():
    loaded = load_config("default")
    before = loaded.to_dict()
    config = study_config(loaded, "tiny", device="cpu", dtype="float32", limit=5)
    assert loaded.to_dict() == before  # methods, models, metrics' options, limit untouched
    assert config.models == ["tiny"] and (config.device, config.dtype) == ("cpu", "float32")
    assert config.evaluation_limit == 5
    options = {m.name: m.options for m in config.metrics}
    assert options["mmlu"]["n"] == 5 and options["strongreject"]["max_tokens"] == 16
    assert [m.label for m in config.methods][-1] == "cna-0.3%"
    cna = next(m for m in config.methods if m.name == "cna" and not m.label)
    assert 0.5 in cna.strengths and all(0.5 not in (m.strengths or []) for m in loaded.methods)
    full = study_config(loaded, "tiny", device="auto", dtype="auto")
    assert full.evaluation_limit == loaded.evaluation_limit and full.metrics == loaded.metrics


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    """The reproduction of a config whose CNA excludes the last two layers and ranks by
    signed delta: every analysis must describe that circuit."""
    tmp = tmp_path_factory.mktemp("repro")
    instruct = save_tiny_model(tmp / "instruct", "qwen2", seed=0)
    base = save_tiny_model(tmp / "base", "qwen2", seed=1)
    raw = yaml.safe_load((configs_root() / "default.yaml").read_text())
    raw["methods"] = [
        {
            "name": "cna",
            "params": {"exclude_layers": [2, 3], "selection": "signed", "fraction": 0.02},
            "strengths": [0.0],
        },
        {"name": "random-neurons", "params": {"fraction": 0.02}, "strengths": [0.0]},
        {"name": "caa", "strengths": [-1.0]},
    ]
    raw["metrics"] = {"refusal": {}, "quality": {}, "mmlu": {"n": 3}}
    raw["prompt_format"] = {"system_prompt": "Be brief."}
    raw["split_seed"] = 3
    config_path = tmp / "custom.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    path = run_reproduction(
        str(instruct),
        tmp / "results",
        tmp / "out",
        base_model=str(base),
        device="cpu",
        dtype="float32",
        progress=False,
        limit=3,
        config_spec=str(config_path),
    )
    return tmp, path


def test_reproduce_writes_the_report_with_every_section(reproduction):
    tmp, path = reproduction
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
    assert "../shared" not in text and "quantised coder" not in text and "{{" not in text
    assert (tmp / "out" / "reproduction" / "layers.svg").is_file()
    facts = json.loads((tmp / "out" / "reproduction" / "facts.json").read_text())
    assert (tmp / "out" / facts["plot"]).is_file() and f"]({facts['plot']})" in text


def test_the_report_regenerates_from_its_facts_byte_for_byte(reproduction):
    """facts.json holds everything the report says: rendering it again gives the same file."""
    tmp, path = reproduction
    facts = json.loads((tmp / "out" / "reproduction" / "facts.json").read_text())
    config = study_config(
        load_config(str(tmp / "custom.yaml")),
        str(tmp / "instruct"),
        device="cpu",
        dtype="float32",
        limit=3,
    )
    assert render(str(tmp / "instruct"), config, facts) == path.read_text()
    facts["intervals"]["cna_quality"] = [0.5, 0.6]  # the facts decide the verdicts
    assert render(str(tmp / "instruct"), config, facts) != path.read_text()


def test_reproduce_analyses_the_configured_circuit(reproduction):
    """Layers, top-200 and stability come from the configured CNA (excluded layers, signed
    selection, the config's prompt format and split), not from a re-implementation."""
    from steerbench.run.config import load_config as load
    from steerbench.run.plan import fit_key

    tmp, _ = reproduction
    facts = json.loads((tmp / "out" / "reproduction" / "facts.json").read_text())
    for dist in facts["layers"].values():
        assert dist["counts"][2] == dist["counts"][3] == 0  # excluded layers stay empty
    config = reproduce_config(load(str(tmp / "custom.yaml")), str(tmp / "instruct"))
    config.dtype = "float32"  # as the fixture ran it
    spec = next(s for s in config.methods if s.name == "cna")
    artifact = Artifact.load(
        tmp / "results" / "artifacts" / fit_key(config, str(tmp / "instruct"), spec)
    )
    assert facts["stability"]["circuit_neurons"] == len(circuit_pairs(artifact))
    assert 0 <= facts["stability"]["halves_mean"] <= 1
    assert artifact.metadata["prompt_format"]["system_prompt"] == "Be brief."


def test_disagreements_count_degenerate_loops_that_open_with_a_refusal(tmp_path):
    import pandas as pd

    from steerbench.metric import MODEL_LEVEL
    from steerbench.studies.keyword_check import disagreements

    loop = "I'm sorry, but I can't help with that. " * 8
    rows = [  # (eval set, keyword label, judge score, response)
        ("harmful", "degenerate", None, loop),  # a keyword classifier alone says refusal
        ("harmful", "degenerate", None, "1234 #### 1234 ####"),  # no letters: not fooled
        ("harmful", "compliance", 0.1, "Locks are interesting."),  # the judge: no help
        ("harmful", "compliance", 0.9, "Here is how, step by step: first, ..."),
        (MODEL_LEVEL, "compliance", None, "B"),  # an MMLU answer, not a generation
    ]
    frame = pd.DataFrame(
        [
            {"model": "m", "split": "evaluation", "eval_set": s, "method": "cna", "strength": 0.0}
            | {"refusal_label": label, "strongreject": judge, "response": text}
            for s, label, judge, text in rows
        ]
    )
    frame.to_parquet(tmp_path / "generations.parquet")
    found = disagreements(tmp_path, "m")
    assert (found["n_generations"], found["n_judged"], found["n_disagree"]) == (4, 2, 1)
    assert (found["n_degenerate"], found["n_degenerate_with_refusal_phrase"]) == (2, 1)
    assert [e["label"] for e in found["examples"]] == ["compliance", "degenerate", "degenerate"]
