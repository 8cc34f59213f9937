"""Behaviours as benchmark tasks: contrast pairs read at the answer letter, seeded disjoint
splits, one config (and key space) per behaviour, and a staged run end to end."""

import pandas as pd
import pytest
import torch
from helpers import tiny_config

from steerbench.errors import SteerbenchError
from steerbench.method import FitContext
from steerbench.metric import get_metric
from steerbench.metrics import behaviour_ab
from steerbench.model.chat import format_prompts, split_reply, with_reply
from steerbench.publish.sources import load_results
from steerbench.run.behaviour_tasks import behaviour_configs, behaviour_metric, behaviour_results
from steerbench.run.behaviours import load_behaviour_items
from steerbench.run.config import load_config, parse_config
from steerbench.run.plan import cell_key, discovery_prompts, fit_key, plan
from steerbench.run.prompt_sets import load_prompts, normalise_text
from steerbench.studies.benchmark import run_benchmark
from steerbench.testing import save_tiny_model

BEHAVIOURS = {
    "names": ["sycophancy", "survival-instinct", "truthfulqa"],
    "discovery_n": 6,
    "validation_n": 4,
    "evaluation_n": 5,
    "side_n": 3,
    "constraints": [{"metric": "mmlu", "role": "model", "max_drop": 1.0}],
}


def behaviours_document(model_dir, **overrides) -> dict:
    document = tiny_config(
        model_dir,
        evaluate="chosen",
        behaviours=BEHAVIOURS,
        methods=[{"name": "caa", "strengths": [-4.0, 4.0]}],
        metrics={"mmlu": {"n": 3, "validation_n": 2}, "truthfulqa-mc1": {"n": 3}},
    )
    for key in ("discovery", "evaluation", "validation", "evaluation_limit"):
        document.pop(key)
    document.update(overrides)
    return document


def test_a_pre_filled_reply_follows_the_rendered_prompt(tiny_qwen):
    _, tokenizer = tiny_qwen
    prompt = with_reply("Pick one.\n(A) yes\n(B) no", "(B")
    assert split_reply(prompt) == ("Pick one.\n(A) yes\n(B) no", "(B")
    assert split_reply("plain") == ("plain", "")
    rendered = format_prompts(tokenizer, [prompt])[0]
    assert rendered == format_prompts(tokenizer, ["Pick one.\n(A) yes\n(B) no"])[0] + "(B"


def test_fitting_reads_the_activation_at_the_answer_letter(tiny_qwen):
    model, tokenizer = tiny_qwen
    records = load_prompts("caa-sycophancy-matching:discovery")[:3]
    question, reply = split_reply(records[0].text)
    assert reply in ("(A", "(B")
    assert question in {i.question for i in load_behaviour_items("sycophancy:generate")}
    captured = FitContext(model, tokenizer, batch_size=2).activations([r.text for r in records])
    text = format_prompts(tokenizer, [records[0].text])[0]
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    assert tokenizer.decode(ids["input_ids"][0, -1]) in ("A", "B", "(A", "(B")
    with torch.inference_mode():
        hidden = model(**ids, output_hidden_states=True).hidden_states
    # the residual after each layer (hidden_states[l + 1]; the last one is normed) at the
    # last token, the answer letter; not at the question's end
    for layer in range(len(hidden) - 2):
        at_letter = hidden[layer + 1][0, -1].float()
        assert torch.allclose(captured.resid_post[0, layer], at_letter, atol=1e-4)
    plain = FitContext(model, tokenizer).activations([question]).resid_post[0]
    assert not torch.allclose(plain, captured.resid_post[0], atol=1e-3)


def test_merged_answer_tokens_are_read_as_one_token():
    class Merging:  # Qwen's BPE: "(A" is one token, "(" another
        vocab = {"(": 7, "(A": 40, "(B": 41, "A": 1, "B": 2}

        def encode(self, text, add_special_tokens=False):
            return [self.vocab[text]]

    class Splitting(Merging):  # Llama's: "(" then "A"
        def encode(self, text, add_special_tokens=False):
            return [self.vocab[c] for c in text]

    assert behaviour_ab.answer_tokens(Merging()) == ("", [40, 41])
    assert behaviour_ab.answer_tokens(Splitting()) == ("(", [1, 2])


def test_truthfulqa_as_a_task_is_fitted_and_reported_on_disjoint_questions():
    true = load_prompts("truthfulqa-true:discovery")
    false = load_prompts("truthfulqa-false:discovery")
    assert [r.id for r in true] == [r.id for r in false] and len(true) == round(817 * 0.4)
    assert all(split_reply(a.text)[1] != split_reply(b.text)[1] for a, b in zip(true, false))
    fitted = {r.id for r in true}
    for name in ("truthfulqa-mc1", "truthfulqa-mc2"):
        metric = get_metric(name, held_out=True, validation_n=10, n=30, split_seed=0)
        chose = {q["id"] for q in metric.questions("validation")}
        reported = {q["id"] for q in metric.questions("evaluation")}
        assert (len(chose), len(reported)) == (10, 30)
        assert not (chose & reported) and not (fitted & (chose | reported))
    assert not get_metric("truthfulqa-mc1").scores_split("validation")


@pytest.mark.parametrize("behaviour", ["sycophancy", "corrigible-neutral-HHH"])
def test_splits_are_disjoint_and_seeded(behaviour):
    def ids(seed):
        positive = load_prompts(f"caa-{behaviour}-matching:discovery", split_seed=seed)
        negative = load_prompts(f"caa-{behaviour}-other:discovery", split_seed=seed)
        assert [r.id for r in positive] == [r.id for r in negative]  # the same pairs
        assert all(
            split_reply(a.text)[1] != split_reply(b.text)[1] for a, b in zip(positive, negative)
        )
        metric = get_metric(f"ab-{behaviour}", validation_n=20, split_seed=seed)
        return {r.id for r in positive}, {i.id for i in metric.items("validation")}

    discovery, validation = ids(0)
    assert discovery and len(validation) == 20 and not discovery & validation
    assert ids(0) == (discovery, validation)  # seeded: the same again
    assert ids(1)[0] != discovery
    generate = {
        i.id: normalise_text(i.question) for i in load_behaviour_items(f"{behaviour}:generate")
    }
    held_out = {normalise_text(i.question) for i in load_behaviour_items(behaviour)}
    assert not held_out & {generate[i] for i in discovery | validation}


def test_cells_of_different_behaviours_never_share_a_key(tmp_path):
    config = parse_config(behaviours_document(tmp_path / "m"), "b")
    parts = behaviour_configs(config)
    assert [p.behaviour for p in parts] == BEHAVIOURS["names"]
    keys = [cell_key(p, c) for p in parts for c in plan(p)]
    assert len(keys) == len(set(keys)) == 3 * 3  # the unsteered cells too
    fits = {fit_key(p, p.models[0], p.methods[0]) for p in parts}
    assert len(fits) == 3
    first = parts[0]
    assert [t.name for t in first.tasks] == ["increase-sycophancy", "decrease-sycophancy"]
    assert {m.name for m in first.metrics} == {
        "ab-sycophancy", "ab-survival-instinct", "truthfulqa-mc2", "mmlu", "truthfulqa-mc1"
    }  # fmt: skip
    truthful = parts[2]
    assert truthful.discovery == {
        "positive": "truthfulqa-true:discovery", "negative": "truthfulqa-false:discovery"
    }  # fmt: skip
    options = {m.name: m.options for m in truthful.metrics}
    assert options["truthfulqa-mc2"]["held_out"] and options["truthfulqa-mc1"]["held_out"]
    assert "held_out" not in {m.name: m.options for m in first.metrics}["truthfulqa-mc1"]
    assert len(discovery_prompts(first, "positive")) == 6
    assert behaviour_results(tmp_path, first) == tmp_path / "sycophancy"
    # a behaviour's config round-trips through its resolved document (the Ray executor)
    again = parse_config(first.to_dict(), first.name)
    assert cell_key(again, plan(again)[1]) == cell_key(first, plan(first)[1])


def test_the_shipped_behaviour_configs_load_and_bad_ones_say_why(tmp_path):
    for name in ("behaviours", "behaviours-quick"):
        assert load_config(name).behaviours is not None
    document = behaviours_document(tmp_path / "m")
    with pytest.raises(SteerbenchError, match="unknown behaviour 'sycophants'"):
        parse_config({**document, "behaviours": {**BEHAVIOURS, "names": ["sycophants"]}}, "b")
    with pytest.raises(SteerbenchError, match="comes from each behaviour"):
        parse_config({**document, "discovery": {"positive": "a", "negative": "b"}}, "b")
    with pytest.raises(SteerbenchError, match=r"behaviours\.side_n"):
        parse_config({**document, "behaviours": {**BEHAVIOURS, "side_n": 0}}, "b")
    one_level = {"name": "prompt", "params": {"toward": ["Yes."], "away": ["No."]}}
    with pytest.raises(SteerbenchError, match=r"strength -2\.0 is outside the domain of 'prompt'"):
        parse_config({**document, "methods": [one_level]}, "b")  # its default sweep: +-1, +-2
    unmeasured = {**BEHAVIOURS, "constraints": [{"metric": "quality", "min": 0.9}]}
    with pytest.raises(SteerbenchError, match="'quality' is not measured"):
        parse_config({**document, "behaviours": unmeasured}, "b")


@pytest.fixture(scope="module")
def behaviour_run(tmp_path_factory):
    model_dir = save_tiny_model(tmp_path_factory.mktemp("m") / "tiny", "qwen2")
    results = tmp_path_factory.mktemp("results")
    document = behaviours_document(
        model_dir,
        evaluation={"benign": "jbb-benign:evaluation"},  # a side effect on generated text
        evaluation_limit=3,
    )
    document["metrics"]["kl-benign"] = {"sets": ["benign"], "max_answer_tokens": 4}
    config = parse_config(document, "tiny-behaviours")
    summary = run_benchmark(config, results, progress=False)
    return config, results, summary


def test_a_behaviours_run_chooses_on_validation_and_measures_every_behaviour(behaviour_run):
    config, results, summary = behaviour_run
    assert summary["cells"] == 3 * 3
    for part in behaviour_configs(config):
        frame = load_results([behaviour_results(results, part)])
        own = behaviour_metric(part.behaviour)
        validation = frame[frame["split"] == "validation"]
        assert set(validation["metric"]) == {own, "mmlu"}  # what choosing reads, no more
        assert set(validation["n"][validation["metric"] == own]) == {4}
        evaluation = frame[frame["split"] == "evaluation"]
        assert set(evaluation["metric"]) == {
            "ab-sycophancy", "ab-survival-instinct", "truthfulqa-mc2", "mmlu", "truthfulqa-mc1",
            "kl-benign",
        }  # fmt: skip
        kl = evaluation[evaluation["metric"] == "kl-benign"]
        assert (kl.loc[kl["is_unsteered"], "value"] == 0).all()  # the reference itself
        sizes = evaluation.groupby("metric")["n"].first()
        other = next(m for m in sizes.index if m.startswith("ab-") and m != own)
        assert (sizes[own], sizes[other], sizes["truthfulqa-mc1"]) == (5, 3, 3)
        assert evaluation["is_unsteered"].any()
        generations = pd.read_parquet(behaviour_results(results, part) / "generations.parquet")
        chose = set(generations.loc[generations["split"] == "validation", "prompt_id"])
        reported = set(generations.loc[generations["split"] == "evaluation", "prompt_id"])
        assert chose and reported and not chose & reported
    again = run_benchmark(config, results, progress=False)
    assert again["ran"] == 0 and again["evaluated_now"] == 0  # resumed: nothing recomputed


def test_the_behaviours_board_reports_paired_changes_from_the_unsteered_model(
    behaviour_run, tmp_path
):
    from steerbench.publish.behaviour_board import entanglement, load_behaviour, method_matrix
    from steerbench.publish.behaviour_page import build_behaviour_board

    _config, results, _ = behaviour_run
    behaviours = [load_behaviour(results / name) for name in BEHAVIOURS["names"]]
    table = entanglement(behaviours)
    assert not table.empty
    for row in table.itertuples():  # every entry is the paired mean difference, by hand
        generations = pd.read_parquet(results / row.steered / "generations.parquet")
        evaluated = generations[generations["split"] == "evaluation"]
        metric = behaviour_metric(row.measured)
        frame = load_results([results / row.steered])
        keys = frame.drop_duplicates("cell_key").set_index(["method", "strength"])["cell_key"]
        steered = keys.loc[(row.method, row.strength)]
        unsteered = frame.loc[frame["is_unsteered"], "cell_key"].iloc[0]
        wide = evaluated.pivot_table(index="prompt_id", columns="cell_key", values=metric)
        both = wide[[steered, unsteered]].dropna()
        assert row.delta == pytest.approx((both[steered] - both[unsteered]).mean(), abs=1e-9)
        assert 0 < row.n == len(both) <= (5 if row.measured == row.steered else 3)  # A/B only
        assert row.ci_low <= row.delta <= row.ci_high
    side = table[table["steered"] != table["measured"]]
    assert (side["p_holm"] >= side["p_value"] - 1e-12).all()
    assert table.loc[table["steered"] == table["measured"], "p_holm"].isna().all()
    matrix = method_matrix(behaviours)
    assert list(matrix.columns) == BEHAVIOURS["names"]
    assert {m for m, _ in matrix.index} == {"caa"}
    with pytest.raises(SteerbenchError, match="holds no behaviour results"):
        build_behaviour_board(tmp_path / "nothing", tmp_path / "board")
    out = build_behaviour_board(results, tmp_path / "board")
    text = (out / "README.md").read_text()
    assert "increase-sycophancy" in text and "decrease-survival-instinct" in text
    assert (out / "dose-response.png").is_file() and (out / "entanglement.png").is_file()


def test_the_committed_behaviours_board_rebuilds_byte_for_byte(tmp_path):
    import shutil
    from pathlib import Path

    from steerbench.publish.behaviour_page import build_behaviour_board

    board = Path(__file__).resolve().parents[1] / "leaderboard" / "behaviours"
    shutil.copytree(board / "results", tmp_path / "results")
    build_behaviour_board(tmp_path / "results", tmp_path)
    for name in ("README.md", "entanglement.svg", "dose-response.svg", "dose-response.png"):
        assert (tmp_path / name).read_bytes() == (board / name).read_bytes(), name


@pytest.mark.parametrize(
    "name", ["caa", "cna", "ace", "directional-ablation", "mean-act", "prompt"]
)
def test_a_neutral_strength_leaves_every_behaviour_score_bit_identical(tiny_qwen, name):
    from types import SimpleNamespace

    from steerbench.method import METHODS, get_method
    from steerbench.run.behaviour_tasks import TASK_BEHAVIOURS

    model, tokenizer = tiny_qwen
    lm = SimpleNamespace(model=model, tokenizer=tokenizer, name="tiny")
    positive = [r.text for r in load_prompts("caa-sycophancy-matching:discovery")[:6]]
    negative = [r.text for r in load_prompts("caa-sycophancy-other:discovery")[:6]]
    params = {"top_k": 8} if name == "cna" else {}
    method = get_method(name, **params)
    artifact = method.fit(FitContext(model, tokenizer), positive, negative)
    metrics = [get_metric(behaviour_metric(b), n=2) for b in TASK_BEHAVIOURS]
    unsteered = [m.compute(lm=lm).values for m in metrics]
    with method.steer(model, artifact, METHODS.get(name).neutral_strength):
        neutral = [m.compute(lm=lm).values for m in metrics]
    assert neutral == unsteered
    if name == "prompt":  # its instruction reaches every behaviour's reading, TruthfulQA's too
        with method.steer(model, artifact, 1.0):
            steered = [m.compute(lm=lm).values for m in metrics]
        assert all(a != b for a, b in zip(steered, unsteered))


def test_the_prompt_baseline_gets_each_behaviours_own_instructions(tmp_path):
    from steerbench.run.behaviour_tasks import INSTRUCTIONS

    document = behaviours_document(tmp_path / "m")
    document["methods"] = [
        {"name": "prompt", "strengths": [-1.0, 1.0]},
        {
            "name": "prompt",
            "label": "mine",
            "params": {"toward": ["Yes."], "away": ["No."]},
            "strengths": [1.0],
        },
    ]
    parts = behaviour_configs(parse_config(document, "b"))
    for part in parts:
        toward, away = INSTRUCTIONS[part.behaviour]
        assert part.methods[0].params == {"toward": [toward], "away": [away]}
        assert part.methods[1].params == {"toward": ["Yes."], "away": ["No."]}  # as given
    assert len({p.methods[0].params["toward"][0] for p in parts}) == len(parts)
    keys = {cell_key(p, c) for p in parts for c in plan(p) if c.method is not None}
    assert len(keys) == 3 * len(parts)
