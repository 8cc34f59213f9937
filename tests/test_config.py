"""The typed config schema: its ``Literal`` choices, the one-line errors a value outside
them gets, and the steps from a document to a config (shape, then plugins and prompt
files, then references to evaluation sets)."""

from __future__ import annotations

import importlib
from typing import Literal, get_args

import pytest
from helpers import tiny_config

from steerbench.errors import SteerbenchError
from steerbench.options import check_value
from steerbench.run import config as config_module
from steerbench.run.config import (
    BenchmarkConfig,
    Dtype,
    check_document,
    load_config,
    parse_config,
    parse_tasks,
)
from steerbench.run.config_schema import field_type


def one_line(error: pytest.ExceptionInfo[SteerbenchError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (
            {"metric": "refusal", "goal": "maximise"},
            "config key 'tasks.t.goal' = 'maximise' is not one of minimize, maximize "
            "(did you mean 'maximize'?)",
        ),
        (
            {"metric": "refusal", "goal": None},
            "config key 'tasks.t.goal' = None is not one of minimize, maximize",
        ),
        (
            {
                "metric": "refusal",
                "goal": "minimize",
                "constraints": [{"metric": "quality", "role": "targets", "min": 0.5}],
            },
            "config key 'tasks.t.constraints[0].role' = 'targets' is not one of target, "
            "over_refusal, model (did you mean 'target'?)",
        ),
    ],
)
def test_a_value_outside_a_literal_names_the_key_the_value_and_the_choices(task, message):
    with pytest.raises(SteerbenchError) as error:
        parse_tasks({"t": task})
    assert one_line(error) == message


def test_dtype_is_one_of_the_loader_dtypes_read_case_insensitively(tmp_path):
    from steerbench.model.device import DTYPES

    assert set(get_args(Dtype)) == {"auto", *DTYPES}  # the schema and the loader agree
    assert field_type(BenchmarkConfig, "dtype") == Dtype
    with pytest.raises(SteerbenchError) as error:
        parse_config(tiny_config(tmp_path, dtype="int8"), "tiny")
    assert one_line(error) == (
        "config key 'dtype' = 'int8' is not one of auto, bfloat16, bf16, float16, fp16, "
        "float32, fp32"
    )
    assert parse_config(tiny_config(tmp_path, dtype="BF16"), "tiny").dtype == "bf16"


def test_values_of_other_types_keep_their_messages():
    with pytest.raises(SteerbenchError, match=r"^k = '3' is not a valid int \("):
        check_value("3", int, "k")
    assert check_value("b", Literal["a", "b"], "k") == "b"
    with pytest.raises(SteerbenchError, match=r"^k = 1 is not one of a, b$"):
        check_value(1, Literal["a", "b"], "k")  # strict: no coercion into a choice


def test_the_shape_step_reads_no_prompt_file_and_builds_no_plugin(tmp_path):
    document = tiny_config(
        tmp_path,
        evaluation={"harmful": "no-such-set", "benign": "jbb-benign:evaluation"},
        methods=[{"name": "cna", "params": {"k": 3}}],
    )
    shaped = check_document(document, "tiny")
    assert shaped.evaluation["harmful"] == "no-such-set"
    with pytest.raises(SteerbenchError, match=r"unknown hyper-parameter"):
        parse_config(document, "tiny")
    document["methods"] = [{"name": "cna"}]
    with pytest.raises(SteerbenchError, match=r"'evaluation.harmful': unknown prompt set"):
        parse_config(document, "tiny")


def test_a_resolved_config_reads_back_as_itself():
    quick = load_config("quick")
    assert parse_config(quick.to_dict(), quick.name) == quick


def test_the_public_names_stay_importable_from_config_and_the_old_path():
    old = importlib.import_module("steerbench.config")
    assert old is config_module
    for name in config_module.__all__:
        assert getattr(old, name) is getattr(config_module, name)
    assert {"load_config", "parse_config", "BenchmarkConfig", "configs_root"} <= set(
        config_module.__all__
    )


def test_the_full_config_is_the_default_plus_the_peer_benchmarks_methods():
    default, full = load_config("default"), load_config("full")
    names = [m.display for m in full.methods]
    assert names[: len(default.methods)] == [m.display for m in default.methods]
    assert {"ace", "cast", "mean-act", "iti", "lora", "lora-comply"} <= set(names)
    for key in ("models", "discovery", "validation", "evaluation", "metrics", "tasks"):
        assert getattr(full, key) == getattr(default, key), key
