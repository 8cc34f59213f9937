"""The table ``steerbench bench`` prints: each figure of ``run_bench`` beside its ratio to
its baseline (kept apart from measuring, so the figures of a ``--json`` file print the same)."""

from __future__ import annotations

from typing import Any


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
    lines += metric_lines(f["metrics"])
    lines += resource_lines(f)
    if "projection" in f:
        lines += projection_lines(f["projection"])
    return "\n".join(lines)


def metric_lines(metrics: dict[str, Any]) -> list[str]:
    """Items/s and forward passes per item against the metric's own floor ("-": no floor);
    a kept reference's first-call extra, once per run."""
    lines = []
    for name, m in metrics.items():
        ratio, speed = m["forward_passes_per_item"], m["items_per_second"]
        lines.append(
            f"{name + ' items/s, forward passes/item':44} "
            f"{f'{speed:12.2f}' if speed is not None else '-':>12} "
            f"{f'{ratio:9.2f}x' if ratio is not None else '-':>10}"
        )
        if m.get("calls_timed", 1) > 1:
            lines.append(
                f"{'  ' + name + ' first call extra (s, once per run)':44} "
                f"{m['first_call_extra_seconds']:12.2f}"
            )
    return lines


def resource_lines(f: dict[str, Any]) -> list[str]:
    """Achieved FLOP/s (prompt + answer tokens) as a share of the matmul ceiling; memory."""
    flops = f["flops"]
    rows = f["answers"][f["answers"]["runs"][-1]]["rows"]
    lines = [
        f"{'GFLOP/s, unsteered batched (prompt + answer)':44} "
        f"{flops['achieved_generation'] / 1e9:12.1f} {flops['fraction_of_peak']:9.1%}"
    ]
    if "achieved_real_answers" in flops:
        lines.append(
            f"{f'GFLOP/s, real answers continuous {rows} rows':44} "
            f"{flops['achieved_real_answers'] / 1e9:12.1f} "
            f"{flops['real_answers_fraction_of_peak']:9.1%}"
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
    return lines


def projection_lines(p: dict[str, Any]) -> list[str]:
    """The config's run projected per phase from the measured rates, in minutes."""
    shape = p["shape"]
    generation = (
        f"  generation, {shape['generated_prompts']} prompts x "
        f"{p['rates']['mean_answer_tokens']:.0f} tokens"
    )
    lines = [
        f"projected run {p['config']!r}, {shape['cells']} cells (min)",
        f"{'  fitting, ' + str(shape['fits']) + ' fits':44} {p['fitting_min']:12.1f}",
        f"{generation:44} {p['generation_min']:12.1f}",
    ]
    for name, minutes in p["metrics_min"].items():
        load = shape["metrics"][name]
        if load["items"] is None:  # model-level: its own items, every call
            count = f"{load['calls']} calls x {p['rates']['metrics'][name]['items_per_call']}"
        else:
            count = f"{load['items']} items"
        lines.append(f"{'  ' + name + ', ' + count:44} {minutes:12.1f}")
        if p["once_per_run_min"].get(name):
            lines.append(f"{'  ' + name + ', once per run':44} {p['once_per_run_min'][name]:12.1f}")
    for name in p["not_projected"]:
        lines.append(f"{'  ' + name + ' (not measured)':44} {'-':>12}")
    lines.append(f"{'  total':44} {p['total_min']:12.1f}")
    return lines
