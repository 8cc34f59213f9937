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
  kl-benign): items/s, and seconds per item in units of one plain forward pass per prompt;
- peak RSS against the weights' size (and peak GPU memory), and achieved FLOP/s against a
  measured matmul FLOP/s.

Every fixed-length generation variant produces exactly the same number of tokens
(``min_new_tokens``, static batches), so tokens/s compare like with like: they measure the
cost of a decoding step; the real-answer figures measure what scheduling saves.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from steerbench.method import FitContext, get_method
from steerbench.metric import Record, get_metric
from steerbench.model.adapter import ModelAdapter
from steerbench.model.chat import PromptFormat, encoded_batches
from steerbench.model.generation import GenerationSettings, generate, generate_tokens
from steerbench.run.config import BenchmarkConfig, MetricSpec, load_config
from steerbench.run.prompt_sets import load_prompts

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


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


def metric_throughput(
    lm,
    specs: Sequence[MetricSpec],
    records: list[Record],
    steering: Callable[[], Any],
    seconds_per_forward: float,
    device: torch.device,
) -> dict[str, dict[str, float]]:
    """Items/s of each metric that reads the model, and its seconds per item over one plain
    forward pass per prompt (the floor's)."""
    figures = {}
    for spec in specs:
        metric = get_metric(spec.name, **spec.options)
        if not metric.uses_model():
            continue
        context = {"steering": steering} if metric.uses_steering else {}
        seconds, result = timed(lambda m=metric, c=context: m.compute(records, lm=lm, **c), device)
        items = result.n - result.n_missing
        figures[spec.name] = {
            "items": items,
            "items_per_second": items / seconds,
            "forward_passes_per_item": seconds / max(1, items) / seconds_per_forward,
        }
    return figures


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
    answers = {}
    for name, (schedule, rows) in runs.items():
        settings = GenerationSettings(
            max_new_tokens=max_new_tokens, batch_size=rows, schedule=schedule
        )
        seconds, answers[name] = timed(
            lambda s=settings: generate_tokens(model, tokenizer, prompts, s, progress=False),
            device,
        )
        tokens = sum(map(len, answers[name]))
        out[name] = {
            "rows": rows,
            "seconds": seconds,
            "tokens": tokens,
            "tokens_per_second": tokens / seconds,
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
    answer_tokens: int = 64,
    config: BenchmarkConfig | None = None,
) -> dict[str, Any]:
    """The figures, for ``config`` (default: the default config): the metrics whose
    throughput is measured, the rows continuous batching also runs with, and one cell's
    prompts, the real answers' workload (``n_answers``: evenly spaced among them)."""
    from steerbench.run.runner import cell_prompts, resolved_generation

    config = config or load_config("default")
    config_batch_size = int(resolved_generation(config)["batch_size"])
    workload = [record.text for record in cell_prompts(config)]
    if n_answers is not None and n_answers < len(workload):
        workload = [workload[i * len(workload) // n_answers] for i in range(n_answers)]
    model, tokenizer = lm.model, lm.tokenizer
    device = lm.device
    prompts = [r.text for r in load_prompts("jbb-harmful") + load_prompts("jbb-benign")]
    discovery = prompts[:n_discovery]
    half = len(discovery) // 2
    positive, negative = discovery[:half], discovery[half:]
    fmt = PromptFormat()

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
        ctx = FitContext(model, tokenizer, fmt=fmt, batch_size=batch_size)
        seconds, artifacts[name] = timed(
            lambda m=method, c=ctx: m.fit(c, positive, negative), device
        )
        figures[f"discovery_seconds_{name}"] = seconds
        figures[f"discovery_vs_floor_{name}"] = seconds / floor_s

    gen_prompts = prompts[:n_generate]
    cna, caa = get_method("cna"), get_method("caa")
    circuit = artifacts["cna"].tensors
    variants = {
        "unsteered": None,
        "cna": lambda: cna.steer(model, artifacts["cna"], 0.0),
        "caa": lambda: caa.steer(model, artifacts["caa"], -1.0),
        "cna_hooks": lambda: reference_hooks(model, circuit["layers"], circuit["neurons"], 0.0),
    }
    generate_exact(model, tokenizer, gen_prompts[:batch_size], 2, batch_size)  # warm-up
    tps: dict[str, float] = {}
    for _ in range(repeats):  # interleaved repeats, best of each: load spikes cancel out
        for name, steer in variants.items():

            def work(steer=steer):
                if steer is None:
                    return generate_exact(model, tokenizer, gen_prompts, new_tokens, batch_size)
                with steer():
                    return generate_exact(model, tokenizer, gen_prompts, new_tokens, batch_size)

            seconds, tokens = timed(work, device)
            tps[name] = max(tps.get(name, 0.0), tokens / seconds)

    def reference():
        with reference_hooks(model, circuit["layers"], circuit["neurons"], 0.0):
            return sum(
                generate_exact(model, tokenizer, [p], new_tokens, 1)
                for p in gen_prompts[:n_reference]
            )

    seconds, tokens = timed(reference, device)
    tps["reference"] = tokens / seconds
    figures["tokens_per_second"] = tps
    figures["steering_overhead"] = {m: 1 - tps[m] / tps["unsteered"] for m in ("cna", "caa")}
    figures["speedup_vs_reference"] = {m: tps[m] / tps["reference"] for m in ("cna", "caa")}
    figures["folding_vs_batched_hooks"] = tps["cna"] / tps["cna_hooks"]

    figures["answers"] = answer_throughput(
        model, tokenizer, workload, answer_tokens, batch_size, device, config_batch_size
    )

    benign = load_prompts("jbb-benign")[:n_metric_items]
    responses = generate(
        model,
        tokenizer,
        [r.text for r in benign],
        GenerationSettings(max_new_tokens=new_tokens, batch_size=batch_size),
        fmt,
        progress=False,
    )
    records = [Record(r.id, r.text, text, r.category) for r, text in zip(benign, responses)]
    figures["metrics"] = metric_throughput(
        lm,
        config.metrics,
        records,
        lambda: cna.steer(model, artifacts["cna"], 0.0),
        floor_s / len(discovery),
        device,
    )

    n_params = sum(p.numel() for p in model.parameters())
    achieved = 2 * n_params * tps["unsteered"]  # forward FLOPs per generated token
    peak = matmul_flops(next(model.parameters()).dtype, device)
    figures["flops"] = {
        "achieved_generation": achieved,
        "measured_matmul_peak": peak,
        "fraction_of_peak": achieved / peak,
    }
    figures["peak_rss_gb"] = peak_rss_bytes() / 1e9
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    figures["peak_rss_vs_weights"] = peak_rss_bytes() / weights
    if device.type == "cuda":
        figures["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    figures["settings"] = {
        "n_generate": n_generate,
        "n_reference": n_reference,
        "new_tokens": new_tokens,
        "batch_size": batch_size,
        "repeats": repeats,
        "n_metric_items": n_metric_items,
        "n_answers": n_answers,
        "answer_tokens": answer_tokens,
    }
    return figures


def format_table(f: dict[str, Any]) -> str:
    tps = f["tokens_per_second"]
    lines = [
        f"steerbench bench: {f['model']} on {f['device']} ({f['dtype']}, {f['threads']} threads)",
        f"{'measure':44} {'value':>12} {'ratio':>10}",
        f"{'forward floor, ' + str(f['discovery_prompts']) + ' prompts (s)':44} "
        f"{f['forward_floor_seconds']:12.2f} {'1.00x':>10}",
    ]
    for name in ("cna", "caa"):
        lines.append(
            f"{'discovery ' + name + ' (s), vs floor':44} "
            f"{f['discovery_seconds_' + name]:12.2f} "
            f"{f['discovery_vs_floor_' + name]:9.2f}x"
        )
    lines.append(
        f"{'generation unsteered batched (tok/s)':44} {tps['unsteered']:12.1f} {'1.00x':>10}"
    )
    for name in ("cna", "caa"):
        lines.append(
            f"{'generation ' + name + '-steered batched (tok/s)':44} "
            f"{tps[name]:12.1f} {tps[name] / tps['unsteered']:9.3f}x"
        )
    lines.append(
        f"{'generation cna by batched hooks (tok/s)':44} "
        f"{tps['cna_hooks']:12.1f} {tps['cna_hooks'] / tps['unsteered']:9.3f}x"
    )
    lines.append(
        f"{'  folded weights vs batched hooks (cna)':44} {'':12} "
        f"{f['folding_vs_batched_hooks']:9.2f}x"
    )
    lines.append(
        f"{'generation reference style, 1 prompt + hook':44} "
        f"{tps['reference']:12.1f} {tps['reference'] / tps['unsteered']:9.3f}x"
    )
    answers = f["answers"]
    for name in answers["runs"]:
        speed = answers[name]["tokens_per_second"]
        schedule = name.split(",")[0]
        label = f"real answers, {schedule} {answers[name]['rows']} rows"
        lines.append(
            f"{label + ' (tok/s)':44} {speed:12.1f} "
            f"{speed / answers['static']['tokens_per_second']:9.2f}x"
        )
    lines.append(
        f"{'  differing answers, static vs continuous':44} "
        f"{answers['answers_differ']:12d} {'of ' + str(answers['prompts']):>10}"
    )
    for name in ("cna", "caa"):
        lines.append(f"{'steering overhead ' + name:44} {f['steering_overhead'][name]:12.1%}")
        lines.append(
            f"{'speedup vs reference ' + name:44} {f['speedup_vs_reference'][name]:11.1f}x"
        )
    for name, m in f["metrics"].items():
        lines.append(
            f"{name + ' items/s, forward passes/item':44} "
            f"{m['items_per_second']:12.2f} {m['forward_passes_per_item']:9.2f}x"
        )
    flops = f["flops"]
    lines.append(
        f"{'achieved generation GFLOP/s':44} {flops['achieved_generation'] / 1e9:12.1f} "
        f"{flops['fraction_of_peak']:9.1%}"
    )
    lines.append(
        f"{'measured matmul GFLOP/s (ceiling)':44} {flops['measured_matmul_peak'] / 1e9:12.1f}"
    )
    lines.append(
        f"{'peak RSS (GB), vs weights':44} {f['peak_rss_gb']:12.2f} "
        f"{f['peak_rss_vs_weights']:9.2f}x"
    )
    if "peak_gpu_memory_gb" in f:
        lines.append(f"{'peak GPU memory (GB)':44} {f['peak_gpu_memory_gb']:12.2f}")
    return "\n".join(lines)
