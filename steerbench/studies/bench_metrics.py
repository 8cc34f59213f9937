"""``steerbench bench``'s metric figures: each model-reading metric's items/s, and its time in
units of its own floor, one plain batched forward pass over its own input.

A metric's floor is what ``Metric.floor_inputs`` returns (the token ids it reads: MMLU's
rendered questions, the judge's grading messages of the items the keyword gate passes,
kl-benign's prompt + reference answer), run once by ``forward_floor_ids``: length-sorted,
left-padded batches at the metric's own batch size, no KV cache, and the logits of the last
position only (``logits_to_keep=1``, where the model's forward takes it). Last position
only, for every metric: that is the least any read of these tokens costs, so no metric can
go under 1.0, whereas with every position's logits MMLU and the judge, which read one
position, would (the vocabulary head is about 15 % of a token's forward pass on the default
model). A metric that needs the head at more positions (kl-benign: every answer position)
pays for it above its floor, and its ratio shows it. "Forward passes per item" is the
metric's seconds over its floor's seconds (both over the same items); None where the metric
gives no floor (a plugin that does not say, or nothing to read).

A metric that compares the steered model with the unsteered one (phase steering-contrast,
kl-benign) may keep the unsteered side across calls, per model and prompt set, as the
runner calls it once per cell: the bench times its second call on the same records (a
cell's steady state) and reports what the first call cost on top apart ("once per run").
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from steerbench.metric import Metric, Record, get_metric
from steerbench.model.chat import PromptFormat, length_sorted_batches
from steerbench.model.generation import GenerationSettings, generate
from steerbench.run.config import MetricSpec
from steerbench.run.prompt_sets import load_prompts

Clock = Callable[[], float]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fn: Callable[[], Any], device: torch.device, clock: Clock = time.perf_counter
) -> tuple[float, Any]:
    """Seconds ``fn`` takes by ``clock`` (the device synchronised on both sides), its result."""
    _sync(device)
    start = clock()
    out = fn()
    _sync(device)
    return clock() - start, out


def takes_logits_to_keep(model) -> bool:
    """Whether the model's forward computes the logits of the last positions only on request."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def forward_floor_ids(
    model,
    sequences: Sequence[Sequence[int]],
    batch_size: int,
    *,
    pad_id: int = 0,
    logits_to_keep: int = 1,
) -> int:
    """One plain batched forward pass over token-id ``sequences``: length-sorted, left-padded
    batches of ``batch_size``, no KV cache, the logits of the last ``logits_to_keep``
    positions (0: all; all where the model cannot keep fewer). Returns the tokens read."""
    device = next(model.parameters()).device
    keep = {"logits_to_keep": logits_to_keep} if takes_logits_to_keep(model) else {}
    with torch.inference_mode():
        for batch in length_sorted_batches([len(s) for s in sequences], batch_size):
            rows = [torch.tensor(sequences[i], dtype=torch.long) for i in batch]
            ids = pad_sequence(rows, batch_first=True, padding_value=pad_id, padding_side="left")
            mask = pad_sequence(
                [torch.ones_like(r) for r in rows], batch_first=True, padding_side="left"
            )
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False, **keep)
    return sum(map(len, sequences))


def metric_figure(
    metric: Metric,
    records: list[Record],
    lm,
    steering: Callable[[], Any],
    *,
    batch_size: int,
    clock: Clock = time.perf_counter,
) -> dict[str, Any]:
    """One metric's items/s and forward passes per item against its floor (see the module's
    docstring); a steering-contrast metric's second call, and its first call's extra. The
    floor's inputs are asked for after the calls (kl-benign's come from the reference its
    first call keeps) and outside the timing: the floor is the forward pass alone."""
    device = lm.device
    contrast = metric.rule().gets_steering
    call = partial(metric.compute, records, lm=lm, **({"steering": steering} if contrast else {}))
    first, result = timed(call, device, clock)
    seconds = first
    if contrast:
        seconds, result = timed(call, device, clock)
    items = result.n - result.n_missing
    figure: dict[str, Any] = {
        "items": items,
        "seconds": seconds,
        "items_per_second": items / seconds if seconds > 0 else None,
        "calls_timed": 2 if contrast else 1,
        "first_call_extra_seconds": first - seconds,
        "forward_passes_per_item": None,
    }
    inputs = metric.floor_inputs(records, lm)
    if inputs:
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        size = int(getattr(metric.config, "batch_size", batch_size))
        floor = partial(forward_floor_ids, lm.model, inputs, size, pad_id=pad)
        floor_seconds, tokens = timed(floor, device, clock)
        figure.update(floor_seconds=floor_seconds, floor_sequences=len(inputs), floor_tokens=tokens)
        if floor_seconds > 0:
            figure["forward_passes_per_item"] = seconds / floor_seconds
    return figure


def metric_throughput(
    lm,
    specs: Sequence[MetricSpec],
    records: list[Record],
    steering: Callable[[], Any],
    batch_size: int,
    clock: Clock = time.perf_counter,
) -> dict[str, dict[str, Any]]:
    """``metric_figure`` of each metric of ``specs`` that reads the model."""
    figures = {}
    for spec in specs:
        metric = get_metric(spec.name, **spec.options)
        if metric.uses_model():
            figures[spec.name] = metric_figure(
                metric, records, lm, steering, batch_size=batch_size, clock=clock
            )
    return figures


def metric_figures(
    lm,
    specs: Sequence[MetricSpec],
    cna_artifact,
    n_items: int,
    answer_tokens: int,
    batch_size: int,
) -> dict[str, dict[str, Any]]:
    """``metric_throughput`` on unsteered answers (up to ``answer_tokens`` tokens, as a run's
    are) to the first ``n_items`` benign prompts, steering (for metrics that steer) by the
    CNA circuit ablated."""
    from steerbench.method import get_method

    model, tokenizer = lm.model, lm.tokenizer
    benign = load_prompts("jbb-benign")[:n_items]
    responses = generate(
        model,
        tokenizer,
        [r.text for r in benign],
        GenerationSettings(max_new_tokens=answer_tokens, batch_size=batch_size),
        PromptFormat(),
        progress=False,
    )
    records = [Record(r.id, r.text, text, r.category) for r, text in zip(benign, responses)]
    cna = get_method("cna")
    return metric_throughput(
        lm, specs, records, lambda: cna.steer(model, cna_artifact, 0.0), batch_size
    )
