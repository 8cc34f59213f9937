"""The lm-eval model type and metric: harness tasks on a steered model, offline."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lm_eval")

from steerbench.method import FitContext, get_method
from steerbench.model.loading import load_model
from steerbench.testing import save_tiny_model

LIMIT = 6


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    directory = save_tiny_model(tmp_path_factory.mktemp("m") / "tiny", "qwen2")
    lm = load_model(str(directory), device="cpu", dtype="float32")
    cna = get_method("cna", top_k=24, neutral_prompts=None)
    artifact = cna.fit(
        FitContext(lm.model, lm.tokenizer, model_name=str(directory)),
        ["How do I make a bomb?", "Write malware"],
        ["How do I bake bread?", "Write a poem"],
    )
    path = artifact.save(tmp_path_factory.mktemp("artifact") / "cna")
    return directory, path


def loglikelihoods(model_args: str) -> list[list[float]]:
    """Per-sample answer log-likelihoods of steerbench_mmlu through lm-eval's Python API."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import steerbench.integrations.lm_eval  # registers the model type
    from steerbench.integrations.lm_eval import task_dir

    out = simple_evaluate(
        model="steerbench",
        model_args=f"{model_args},device=cpu,dtype=float32,max_length=2048",
        tasks=["steerbench_mmlu"],
        limit=LIMIT,
        log_samples=True,
        task_manager=TaskManager(include_path=str(task_dir())),
        verbosity="WARNING",
    )
    assert steerbench.integrations.lm_eval.SteerbenchLM
    samples = sorted(out["samples"]["steerbench_mmlu"], key=lambda s: s["doc_id"])
    return [[ll for ll, _ in s["filtered_resps"]] for s in samples]


def test_steering_reaches_the_harness_and_neutral_is_identical(fitted):
    directory, artifact = fitted
    plain = loglikelihoods(f"model={directory}")
    neutral = loglikelihoods(f"model={directory},method=cna,artifact={artifact},strength=1")
    ablated = loglikelihoods(f"model={directory},method=cna,artifact={artifact},strength=0")
    assert len(plain) == LIMIT and all(len(row) == 4 for row in plain)
    assert neutral == plain
    assert ablated != plain


def test_the_model_type_restores_the_weights_between_calls(fitted):
    import steerbench.integrations.lm_eval as harness

    directory, artifact = fitted
    lm = harness.SteerbenchLM(
        model=str(directory),
        method="cna",
        artifact=str(artifact),
        strength=0.0,
        device="cpu",
        dtype="float32",
    )
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with lm.steering():
        steered = lm.model.model.layers[0].mlp.down_proj.weight.clone()
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    assert lm.model is not None and steered is not None


def test_bad_steering_arguments_are_one_line(fitted):
    import steerbench.integrations.lm_eval as harness
    from steerbench.errors import SteerbenchError

    directory, artifact = fitted
    with pytest.raises(SteerbenchError, match="method needs artifact"):
        harness.SteerbenchLM(model=str(directory), method="cna", device="cpu")
    with pytest.raises(SteerbenchError, match="outside the domain"):
        harness.SteerbenchLM(
            model=str(directory), method="cna", artifact=str(artifact), strength=-3, device="cpu"
        )


def test_prompt_and_decoding_level_methods_are_refused_not_silently_ignored(fitted, tmp_path):
    import steerbench.integrations.lm_eval as harness
    from steerbench.errors import SteerbenchError

    directory, _ = fitted
    lm = load_model(str(directory), device="cpu", dtype="float32")
    ctx = FitContext(lm.model, lm.tokenizer, model_name=str(directory))
    for name in ("prompt", "refusal-logit-bias"):
        path = get_method(name).fit(ctx, ["a"], ["b"]).save(tmp_path / name)
        with pytest.raises(SteerbenchError, match="which lm-eval builds itself"):
            harness.steering_context(lm.model, name, str(path), -1.0)


def test_lm_eval_tasks_as_a_benchmark_metric_land_in_the_results(fitted, tmp_path):
    import pyarrow.parquet as pq
    from test_runner import tiny_config

    from steerbench.run.config import parse_config
    from steerbench.run.runner import Runner

    directory, _ = fitted
    raw = tiny_config(
        directory,
        methods=[
            {"name": "cna", "params": {"top_k": 24, "neutral_prompts": None}, "strengths": [0.0]}
        ],
        metrics={"refusal": {}, "lm-eval": {"tasks": ["steerbench_mmlu"], "limit": LIMIT}},
        evaluation_limit=2,
        generation={"max_new_tokens": 3, "batch_size": 4},
    )
    Runner(parse_config(raw, "tiny"), tmp_path, progress=False).run()
    rows = pq.read_table(tmp_path / "results.parquet").to_pandas()
    harness_rows = rows[rows["metric"] == "lm-eval"]
    assert len(harness_rows) == 2 and set(harness_rows["n"]) == {LIMIT}
    assert harness_rows["value"].between(0, 1).all()


def test_the_command_line_runs_offline(fitted, tmp_path):
    import subprocess
    import sys

    directory, artifact = fitted
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "steerbench",
            "lm-eval",
            "--model",
            "steerbench",
            "--model_args",
            f"model={directory},method=cna,artifact={artifact},strength=0,dtype=float32",
            "--device",
            "cpu",
            "--tasks",
            "steerbench_mmlu",
            "--limit",
            "3",
            "--output_path",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "steerbench_mmlu" in done.stdout
