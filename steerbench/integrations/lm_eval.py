"""lm-evaluation-harness integration: any harness task on a steered model.

Importing this module registers the lm-eval model type ``steerbench`` (lm-eval 0.4 has no
entry point for third-party model types, so registration happens on import; ``steerbench
lm-eval`` and ``python -m steerbench.integrations.lm_eval`` are lm-eval's own command line with it
registered). The model type loads anything ``--model`` accepts (built-in names
included) and enters the method's ``steer`` context around every log-likelihood and
generation call, so the harness scores the steered model and the weights are restored
between calls:

    steerbench lm-eval --model steerbench \\
        --model_args model=qwen2.5-coder-1.5b-instruct,method=cna,artifact=DIR,strength=0 \\
        --tasks steerbench_mmlu

``task_dir()`` writes the shipped MMLU subset as a local harness task (``steerbench_mmlu``,
JSON files, no hub), in the exact prompt format of steerbench's own ``mmlu`` metric.
Needs ``pip install 'steerbench[lm-eval]'``.
"""

from __future__ import annotations

import json
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from steerbench.errors import SteerbenchError

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as err:  # the optional extra is missing
    raise SteerbenchError(
        "lm-evaluation-harness is not installed; install it with: pip install 'steerbench[lm-eval]'"
    ) from err

TASK = "steerbench_mmlu"
_LETTERS = ("A", "B", "C", "D")
_TASK_YAML = """\
# Written by steerbench.integrations.lm_eval.task_dir(): the shipped MMLU subset as a local
# task, in the prompt format of steerbench's own mmlu metric (subject header, question,
# A-D, "Answer:").
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_json}
test_split: test
output_type: multiple_choice
doc_to_text: "The following are multiple choice questions (with answers) about \
{{{{subject.replace('_', ' ')}}}}.\\n\\n{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\n\
B. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def task_dir() -> Path:
    """A folder for lm-eval's ``include_path`` holding the ``steerbench_mmlu`` task."""
    from steerbench.files import atomic_write_text
    from steerbench.model.weights import cache_dir
    from steerbench.run.prompt_sets import load_mmlu

    directory = cache_dir() / "lm_eval_tasks"
    data = directory / f"{TASK}.jsonl"
    rows = [
        {
            "id": q["id"],
            "subject": q["subject"],
            "question": q["question"],
            "choices": q["choices"],
            "label": _LETTERS.index(q["answer"]),
        }
        for q in load_mmlu()
    ]
    atomic_write_text(data, "".join(json.dumps(r) + "\n" for r in rows))
    text = _TASK_YAML.format(task=TASK, data_json=json.dumps(str(data)))
    atomic_write_text(directory / f"{TASK}.yaml", text)
    return directory


def steering_context(model, method: str | None, artifact: str | None, strength: Any):
    """A factory of fresh ``steer`` contexts for ``model`` (checked once, here)."""
    from steerbench.method import Artifact, get_method

    if method is None:
        if artifact is not None or strength is not None:
            raise SteerbenchError("artifact and strength need method=NAME in model_args")
        return nullcontext
    if artifact is None:
        raise SteerbenchError("method needs artifact=DIR in model_args (`steerbench discover`)")
    fitted = Artifact.load(artifact)
    steerer = get_method(method, **fitted.metadata.get("hyperparameters", {}))
    if steerer.level != "model":
        raise SteerbenchError(
            f"method {method!r} acts on the {steerer.level} (prompt or decoding), which "
            f"lm-eval builds itself, so it would not be applied; the lm-eval model type "
            f"supports methods that act on the model (weights or activations)"
        )
    value = steerer.neutral_strength if strength is None else float(strength)
    steerer.steer(model, fitted, value)  # validate artifact, model and strength up front
    return lambda: steerer.steer(model, fitted, value)


@register_model("steerbench")
class SteerbenchLM(HFLM):
    """lm-eval's Hugging Face model, loaded by steerbench and steered around every call."""

    def __init__(
        self,
        model: str | None = None,
        method: str | None = None,
        artifact: str | None = None,
        strength: float | None = None,
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        allow_pickle_weights: bool = False,
        batch_size: int | str = 8,
        **kwargs: Any,
    ) -> None:
        from steerbench.model.loading import load_model
        from steerbench.model.weights import DEFAULT_MODEL

        loaded = load_model(
            model or DEFAULT_MODEL,
            device=device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=bool(trust_remote_code),
            allow_pickle_weights=bool(allow_pickle_weights),
        )
        self._steering = steering_context(loaded.model, method, artifact, strength)
        super().__init__(
            pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size, **kwargs
        )

    def steering(self) -> AbstractContextManager[None]:
        return self._steering()

    def _model_call(self, *args, **kwargs):
        with self.steering():
            return super()._model_call(*args, **kwargs)

    def _model_generate(self, *args, **kwargs):
        with self.steering():
            return super()._model_generate(*args, **kwargs)


def evaluate(lm, tasks: list[str], *, limit: int | None = None, batch_size: int = 8) -> dict:
    """Run harness ``tasks`` on a loaded steerbench model as it is now (steered or not);
    the shipped ``steerbench_mmlu`` task is always available. Returns lm-eval's results
    with per-sample records."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    harness_model = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size)
    return simple_evaluate(
        model=harness_model,
        tasks=list(tasks),
        limit=limit,
        log_samples=True,
        task_manager=TaskManager(include_path=str(task_dir())),
        verbosity="WARNING",
    )


def main(argv: list[str] | None = None) -> int:
    """lm-eval's command line with the ``steerbench`` model type and task registered."""
    from lm_eval.__main__ import cli_evaluate

    args = list(sys.argv[1:] if argv is None else argv)
    if "--include_path" not in args and not any(a.startswith("--include_path=") for a in args):
        args += ["--include_path", str(task_dir())]
    saved = sys.argv
    sys.argv = ["lm_eval", *args]
    try:
        cli_evaluate()
    except SystemExit as done:
        return int(done.code or 0)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
