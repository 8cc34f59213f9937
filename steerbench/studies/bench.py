"""``steerbench bench``: speed and memory, as ratios against baselines run in the same process.

- discovery (CNA, CAA) on 200 prompts vs the floor: one plain batched forward pass
  (``model(**batch)``) over the same prompts;
- generation tokens/s: unsteered batched, CNA- and CAA-steered batched, CNA by batched
  forward pre-hooks instead of folded weights (same prompts, batches and tokens: what
  folding itself buys), and the paper's reference style (one prompt at a time, steering by
  a pre-hook that clones the activation and multiplies the neurons);
- real answers, each to its end, on one cell's prompts of the config (the default's: 60
  harmful, mostly refused early, 40 benign and 40 XSTest prompts, mostly answered in
  full): answer tokens/s of continuous batching against static batches, and how many
  greedy answers the two schedules disagree on (bf16 only);
- every model-reading metric of the config (the default's: MMLU, the StrongREJECT judge,
  kl-benign): items/s, and forward passes per item in units of one plain batched forward
  pass over the metric's own input (``steerbench.studies.bench_metrics``);
- peak RSS against the weights' size (and peak GPU memory), and the achieved FLOP/s of
  unsteered batched generation and of the real answers against a measured matmul FLOP/s:
  2 x non-embedding parameters x (prompt + answer tokens) / seconds (each prompt's tokens as
  rendered, also the system turn continuous batching reads once; the head and attention's
  own matmuls are not counted, so the share is a lower bound);
- the config's run projected from these rates, per phase (``bench_projection``).

Every fixed-length generation variant produces exactly the same number of tokens
(``min_new_tokens``, static batches), so tokens/s compare like with like: they measure the
cost of a decoding step; the real-answer figures measure what scheduling saves.
"""

from __future__ import annotations

import logging
import resource
import sys
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch

from steerbench.method import FitContext, get_method
from steerbench.model.adapter import ModelAdapter
from steerbench.model.chat import PromptFormat, encoded_batches, format_prompts, token_lengths
from steerbench.model.generation import GenerationSettings, generate_tokens
from steerbench.run.config import BenchmarkConfig, load_config
from steerbench.run.prompt_sets import load_prompts
from steerbench.studies.bench_metrics import metric_figures, timed
from steerbench.studies.bench_projection import project_run, rates_from_figures

log = logging.getLogger(__name__)


def forward_floor(model, tokenizer, prompts: list[str], batch_size: int) -> int:
    """One plain batched forward pass of the full model over the prompts; returns tokens."""
    device = next(model.parameters()).device
    tokens = 0
    with torch.inference_mode():
        for _, encoded in encoded_batches(tokenizer, prompts, PromptFormat(), batch_size, device):
            model(**encoded, use_cache=False)
            tokens += int(encoded["attention_mask"].sum())
    return tokens


def generate_exact(model, tokenizer, prompts: list[str], new_tokens: int, batch_size: int) -> int:
    """Batched greedy generation of exactly ``new_tokens`` per prompt; returns token count."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        for _, encoded in encoded_batches(tokenizer, prompts, PromptFormat(), batch_size, device):
            model.generate(
                **encoded,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
    return len(prompts) * new_tokens


@contextmanager
def reference_hooks(model, layers: torch.Tensor, neurons: torch.Tensor, multiplier: float):
    """The reference code's style: a pre-hook that clones the activation and scales it."""
    adapter = ModelAdapter.from_model(model)
    handles = []
    for layer in torch.unique(layers).tolist():
        columns = neurons[layers == layer]

        def hook(_module, args, columns=columns):
            x = args[0].clone()
            x[..., columns] *= multiplier
            return (x,)

        handles.append(adapter.down_proj(layer).register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def matmul_flops(
    dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 5
) -> float:
    """Measured dense matmul FLOP/s in the model's dtype: the machine's practical ceiling."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    torch.matmul(a, b)  # warm-up
    seconds, _ = timed(lambda: [torch.matmul(a, b) for _ in range(repeats)], device)
    return 2 * size**3 * repeats / seconds


def answer_throughput(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    device,
    config_batch_size: int | None = None,
) -> dict[str, Any]:
    """Real answers, each to its end (refusals end early, benign answers run long): answer
    tokens/s of static batches vs continuous batching with the same rows, prompts and token
    budget (and continuous batching with the config's rows, when that differs); and how
    many greedy answers differ (none in float32; in bf16 batch composition can flip a
    near-tie)."""
    runs = {"static": ("static", batch_size), "continuous": ("continuous", batch_size)}
    if config_batch_size and config_batch_size != batch_size:
        runs[f"continuous, {config_batch_size} rows"] = ("continuous", config_batch_size)
    out: dict[str, Any] = {"prompts": len(prompts), "max_new_tokens": max_new_tokens}
    out["prompt_tokens"] = prompt_tokens(tokenizer, prompts)
    answers = {}
    for name, (schedule, rows) in runs.items():
        settings = GenerationSettings(
            max_new_tokens=max_new_tokens, batch_size=rows, schedule=schedule
        )
        seconds, answers[name] = timed(
            partial(generate_tokens, model, tokenizer, prompts, settings, progress=False),
            device,
        )
        tokens = sum(map(len, answers[name]))
        out[name] = {
            "rows": rows,
            "seconds": seconds,
            "tokens": tokens,
            "tokens_per_second": tokens / seconds,
            "processed_tokens_per_second": (out["prompt_tokens"] + tokens) / seconds,
        }
    out["runs"] = list(runs)
    out["speedup"] = out["continuous"]["tokens_per_second"] / out["static"]["tokens_per_second"]
    out["answers_differ"] = sum(a != b for a, b in zip(answers["static"], answers["continuous"]))
    return out


def peak_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run_bench(
    lm,
    *,
    n_discovery: int = 200,
    n_generate: int = 32,
    n_reference: int = 8,
    new_tokens: int = 32,
    batch_size: int = 16,
    repeats: int = 2,
    n_metric_items: int = 16,
    n_answers: int | None = None,
    answer_tokens: int | None = None,
    config: BenchmarkConfig | None = None,
) -> dict[str, Any]:
    """The figures, for ``config`` (default: the default config): the metrics whose
    throughput is measured, the rows continuous batching also runs with, one cell's prompts,
    the real answers' workload (``n_answers``: evenly spaced among them), their new-token
    budget (``answer_tokens``, default the config's, also that of the answers the metrics
    score) and the run whose wall time is projected."""
    from steerbench.run.plan import resolved_generation

    config = config or load_config("default")
    generation = resolved_generation(config)
    answer_tokens = answer_tokens or int(generation["max_new_tokens"])
    workload = answer_workload(config, n_answers)
    prompts = [r.text for r in load_prompts("jbb-harmful") + load_prompts("jbb-benign")]
    figures, artifacts = discovery_figures(lm, prompts[:n_discovery], batch_size)
    generated = prompts[:n_generate]
    tps = generation_speeds(lm, artifacts, generated, n_reference, new_tokens, batch_size, repeats)
    figures["tokens_per_second"] = tps
    figures["steering_overhead"] = {m: 1 - tps[m] / tps["unsteered"] for m in ("cna", "caa")}
    figures["speedup_vs_reference"] = {m: tps[m] / tps["reference"] for m in ("cna", "caa")}
    figures["folding_vs_batched_hooks"] = tps["cna"] / tps["cna_hooks"]
    figures["answers"] = answers = answer_throughput(
        lm.model,
        lm.tokenizer,
        workload,
        answer_tokens,
        batch_size,
        lm.device,
        int(generation["batch_size"]),
    )
    figures["metrics"] = metric_figures(
        lm, config.metrics, artifacts["cna"], n_metric_items, answer_tokens, batch_size
    )
    with_prompts = 1 + prompt_tokens(lm.tokenizer, generated) / (len(generated) * new_tokens)
    processed = {  # prompt + answer tokens per second
        "generation": tps["unsteered"] * with_prompts,
        "real_answers": answers[answers["runs"][-1]]["processed_tokens_per_second"],
    }
    figures.update(resource_figures(lm, processed))
    figures["projection"] = project_run(rates_from_figures(figures), config)
    figures["settings"] = {
        "n_generate": n_generate,
        "n_reference": n_reference,
        "new_tokens": new_tokens,
        "batch_size": batch_size,
        "repeats": repeats,
        "n_metric_items": n_metric_items,
        "n_answers": n_answers,
        "answer_tokens": answer_tokens,
        "floor_logits_to_keep": 1,
    }
    return figures


def prompt_tokens(tokenizer, prompts: list[str]) -> int:
    """The prompts' tokens as generation renders them (the default format)."""
    fmt = PromptFormat()
    texts = format_prompts(tokenizer, prompts, fmt)
    return sum(token_lengths(tokenizer, texts, chat=fmt.uses_chat(tokenizer)))


def answer_workload(config: BenchmarkConfig, n_answers: int | None) -> list[str]:
    """One cell's prompts of the config (``n_answers``: evenly spaced among them)."""
    from steerbench.run.plan import cell_prompts

    workload = [record.text for record in cell_prompts(config)]
    if n_answers is not None and n_answers < len(workload):
        workload = [workload[i * len(workload) // n_answers] for i in range(n_answers)]
    return workload


def discovery_figures(
    lm, discovery: list[str], batch_size: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's description, the forward floor and CNA's and CAA's fitting time against
    it (the first half of the prompts as positive, the rest negative); and the artifacts."""
    model, tokenizer, device = lm.model, lm.tokenizer, lm.device
    half = len(discovery) // 2
    positive, negative = discovery[:half], discovery[half:]
    floor_s, floor_tokens = timed(
        lambda: forward_floor(model, tokenizer, discovery, batch_size), device
    )
    figures: dict[str, Any] = {
        "model": lm.name,
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "discovery_prompts": len(discovery),
        "forward_floor_seconds": floor_s,
        "forward_floor_tokens_per_second": floor_tokens / floor_s,
    }
    artifacts = {}
    for name, params in (("cna", {"neutral_prompts": None}), ("caa", {})):
        method = get_method(name, **params)
        ctx = FitContext(model, tokenizer, fmt=PromptFormat(), batch_size=batch_size)
        seconds, artifacts[name] = timed(partial(method.fit, ctx, positive, negative), device)
        figures[f"discovery_seconds_{name}"] = seconds
        figures[f"discovery_vs_floor_{name}"] = seconds / floor_s
    return figures, artifacts


def generation_speeds(
    lm,
    artifacts: dict[str, Any],
    prompts: list[str],
    n_reference: int,
    new_tokens: int,
    batch_size: int,
    repeats: int,
) -> dict[str, float]:
    """Tokens/s of exactly ``new_tokens`` per prompt: unsteered, CNA and CAA by folded
    weights, CNA by batched hooks (best of ``repeats`` interleaved runs: load spikes cancel
    out), and the reference style on the first ``n_reference`` prompts."""
    model, tokenizer, device = lm.model, lm.tokenizer, lm.device
    cna, caa = get_method("cna"), get_method("caa")
    circuit = artifacts["cna"].tensors
    variants = {
        "unsteered": None,
        "cna": lambda: cna.steer(model, artifacts["cna"], 0.0),
        "caa": lambda: caa.steer(model, artifacts["caa"], -1.0),
        "cna_hooks": lambda: reference_hooks(model, circuit["layers"], circuit["neurons"], 0.0),
    }
    generate_exact(model, tokenizer, prompts[:batch_size], 2, batch_size)  # warm-up
    tps: dict[str, float] = {}
    for _ in range(repeats):
        for name, steer in variants.items():

            def work(steer=steer):
                if steer is None:
                    return generate_exact(model, tokenizer, prompts, new_tokens, batch_size)
                with steer():
                    return generate_exact(model, tokenizer, prompts, new_tokens, batch_size)

            seconds, tokens = timed(work, device)
            tps[name] = max(tps.get(name, 0.0), tokens / seconds)

    def reference():
        with reference_hooks(model, circuit["layers"], circuit["neurons"], 0.0):
            return sum(
                generate_exact(model, tokenizer, [p], new_tokens, 1) for p in prompts[:n_reference]
            )

    seconds, tokens = timed(reference, device)
    tps["reference"] = tokens / seconds
    return tps


def non_embedding_parameters(model) -> int:
    """Parameters outside the token embedding and the output head (tied or not)."""
    embeddings = {
        id(module.weight)
        for module in (model.get_input_embeddings(), model.get_output_embeddings())
        if module is not None
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def resource_figures(lm, processed_tokens_per_second: dict[str, float]) -> dict[str, Any]:
    """Achieved FLOP/s (2 x non-embedding parameters per prompt or answer token, for each
    rate of ``processed_tokens_per_second``) against a measured matmul ceiling, peak RSS
    against the weights' size, and peak GPU memory on CUDA."""
    model, device = lm.model, lm.device
    n_params = non_embedding_parameters(model)
    peak = matmul_flops(next(model.parameters()).dtype, device)
    achieved = {k: 2 * n_params * rate for k, rate in processed_tokens_per_second.items()}
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    figures: dict[str, Any] = {
        "flops": {
            "non_embedding_parameters": n_params,
            "measured_matmul_peak": peak,
            "achieved_generation": achieved["generation"],
            "fraction_of_peak": achieved["generation"] / peak,
            "achieved_real_answers": achieved["real_answers"],
            "real_answers_fraction_of_peak": achieved["real_answers"] / peak,
        },
        "peak_rss_gb": peak_rss_bytes() / 1e9,
        "peak_rss_vs_weights": peak_rss_bytes() / weights,
    }
    if device.type == "cuda":
        figures["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    return figures
