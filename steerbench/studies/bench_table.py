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
