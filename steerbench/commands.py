"""Subcommands built on the method and metric layers: ``methods``, ``discover``."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import yaml

from steerbench.cli_options import add_model_options, load_from_args, prompt_format_from_args
from steerbench.errors import SteerbenchError

log = logging.getLogger("steerbench")


def parse_params(pairs: list[str] | None) -> dict:
    """``["top_k=20", "layers=[10, 12]"]`` -> ``{"top_k": 20, "layers": [10, 12]}`` (YAML)."""
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SteerbenchError(f"--param takes KEY=VALUE, got {pair!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def cmd_methods(args: argparse.Namespace) -> int:
    from steerbench.method import METHODS

    print(f"{'name':24} {'source':16} {'neutral':>7}  description")
    for entry in METHODS.entries():
        cls = entry.cls
        print(f"{entry.name:24} {entry.source:16} {cls.neutral_strength:7g}  {cls.description}")
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from steerbench.data import load_prompts
    from steerbench.method import FitContext, get_method

    params = parse_params(args.param)
    if args.top_k is not None:
        params["top_k"] = args.top_k
    method = get_method(args.method, **params)
    positive = [r.text for r in load_prompts(args.positive)]
    negative = [r.text for r in load_prompts(args.negative)]
    out = Path(args.out)
    loaded = load_from_args(args)
    ctx = FitContext(
        loaded.model,
        loaded.tokenizer,
        fmt=prompt_format_from_args(args),
        batch_size=args.batch_size,
        model_name=loaded.name,
        model_revision=loaded.revision,
        progress=True,
    )
    start = time.perf_counter()
    artifact = method.fit(ctx, positive, negative)
    seconds = time.perf_counter() - start
    artifact.metadata.update(
        positive=args.positive, negative=args.negative, fit_seconds=round(seconds, 2)
    )
    artifact.save(out)
    print(
        f"{method.name} fitted on {len(positive)} positive / {len(negative)} negative prompts "
        f"in {seconds:.1f} s -> {out}"
    )
    for line in method.summary(artifact):
        print(f"  {line}")
    return 0


def register_method_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list steering methods (built-in and plugins)")
    p.set_defaults(handler=cmd_methods)

    p = sub.add_parser(
        "discover",
        help="fit a steering method and save its artifact",
        description="Fit a method on positive vs negative prompts and save the artifact "
        "(safetensors + JSON) for `steerbench generate --artifact`.",
    )
    p.add_argument("--method", default="cna", help="method name (default: cna)")
    p.add_argument(
        "--positive",
        default="jbb-harmful:discovery",
        help="positive prompts: file or set name (default: jbb-harmful:discovery)",
    )
    p.add_argument(
        "--negative",
        default="jbb-benign:discovery",
        help="negative prompts: file or set name (default: jbb-benign:discovery)",
    )
    p.add_argument("--top-k", type=int, help="circuit size for neuron methods (count)")
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="method hyper-parameter (YAML value), repeatable",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", required=True, help="artifact directory")
    add_model_options(p)
    p.set_defaults(handler=cmd_discover)


# --- metrics ------------------------------------------------------------------------------


def metric_options_from_args(args: argparse.Namespace) -> dict[str, dict]:
    """Per-metric options from the dedicated flags and ``--metric-option metric.key=value``."""
    options: dict[str, dict] = {}
    if getattr(args, "judge_url", None):
        options.setdefault("strongreject", {}).update(judge_url=args.judge_url)
    if getattr(args, "judge_model", None):
        options.setdefault("strongreject", {}).update(judge_model=args.judge_model)
    if getattr(args, "mmlu_n", None):
        options.setdefault("mmlu", {}).update(n=args.mmlu_n)
    for pair in getattr(args, "metric_option", None) or []:
        dotted, _, value = pair.partition("=")
        metric, _, key = dotted.partition(".")
        if not key or not _:
            raise SteerbenchError(f"--metric-option takes METRIC.KEY=VALUE, got {pair!r}")
        options.setdefault(metric, {})[key] = yaml.safe_load(value)
    return options


def add_metric_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics")
    group.add_argument(
        "--judge-url",
        help="OpenAI-compatible endpoint for the strongreject "
        "judge (key from $STEERBENCH_JUDGE_API_KEY); default: local model",
    )
    group.add_argument("--judge-model", help="model name sent to --judge-url")
    group.add_argument("--mmlu-n", type=int, help="MMLU questions (default 285, all subjects)")
    group.add_argument(
        "--metric-option",
        action="append",
        metavar="METRIC.KEY=VALUE",
        help="any metric option, e.g. quality.n=3 (repeatable)",
    )


def read_records(path: Path):
    """Records with ``prompt`` and ``response`` (and an optional ``id``) from JSONL/Parquet."""
    from steerbench.metric import Record

    if not path.is_file():
        raise SteerbenchError(f"{path} does not exist; pass a JSONL or Parquet file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif path.suffix in (".jsonl", ".json"):
        from steerbench.data import read_jsonl

        rows = read_jsonl(path)
    else:
        raise SteerbenchError(f"{path}: use a .jsonl or .parquet file of prompt/response records")
    missing = [i for i, r in enumerate(rows) if "prompt" not in r or "response" not in r]
    if not rows or missing:
        raise SteerbenchError(
            f"{path}: every record needs 'prompt' and 'response' fields "
            f"({'no records' if not rows else f'record {missing[0] + 1} lacks them'})"
        )
    return [
        Record(
            str(r.get("id", f"item-{i:05d}")),
            str(r["prompt"]),
            str(r["response"] or ""),
            r.get("category"),
        )
        for i, r in enumerate(rows)
    ]


def per_item_field(metric: str, value):
    """Per-item values as written to files: refusal as a boolean, the rest as numbers."""
    if value is None:
        return None
    return bool(value) if metric == "refusal" else value


def print_results(results) -> None:
    print(f"{'metric':14} {'value':>8} {'95% CI':>19} {'n':>5} {'missing':>7}")
    for r in results:
        print(
            f"{r.metric:14} {r.aggregate:8.3f} [{r.ci_low:7.3f}, {r.ci_high:7.3f}] {r.n:5d} "
            f"{r.n_missing:7d}"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from steerbench.metric import get_metric

    records = read_records(Path(args.file))
    options = metric_options_from_args(args)
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    metrics = [get_metric(name, **options.get(name, {})) for name in names]
    needs_lm = any(
        m.needs_model and not (m.name == "strongreject" and m.config.judge_url) for m in metrics
    )
    lm = load_from_args(args) if needs_lm else None
    results = [m.compute(records, lm=lm) for m in metrics]
    print_results(results)
    if args.out:
        rows = []
        for i, record in enumerate(records):
            row = {"id": record.id, "prompt": record.prompt, "response": record.response}
            for result in results:
                if len(result.values) == len(records) and result.metric != "mmlu":
                    row[result.metric] = per_item_field(result.metric, result.values[i])
            rows.append(row)
        write_rows(Path(args.out), rows)
        log.info("Wrote per-item values to %s", args.out)
    return 0


def write_rows(path: Path, rows: list[dict]) -> None:
    """JSONL or Parquet by extension, written atomically."""
    from steerbench.cli_options import write_jsonl_atomic

    if path.suffix == ".parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        from steerbench.io import atomic_write_bytes

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        atomic_write_bytes(path, buffer.getvalue())
    else:
        write_jsonl_atomic(path, rows)


def cmd_metrics(args: argparse.Namespace) -> int:
    from steerbench.metric import METRICS

    print(f"{'name':16} {'source':16} {'model':6} description")
    for entry in METRICS.entries():
        cls = entry.cls
        print(
            f"{entry.name:16} {entry.source:16} {'yes' if cls.needs_model else 'no':6} "
            f"{cls.description}"
        )
    return 0


def cmd_validate_refusal(args: argparse.Namespace) -> int:
    from steerbench.metrics.refusal import validation_report

    report = validation_report()
    print(
        f"refusal classifier on {report['n']} labelled responses "
        f"(datasets/refusal_validation): accuracy {report['accuracy']:.3f}, "
        f"refusal precision {report['precision']:.3f}, recall {report['recall']:.3f}, "
        f"degenerate recall {report['degenerate_recall']:.3f}"
    )
    for item in report["errors"]:
        print(f"  {item['label']:>10} -> {item['predicted']:10} {item['response'][:70]!r}")
    return 0


def register_metric_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="list metrics (built-in and plugins)")
    p.set_defaults(handler=cmd_metrics)

    p = sub.add_parser(
        "evaluate",
        help="score prompt/response records with metrics",
        description="Evaluate a JSONL or Parquet file of records with `prompt` and `response` "
        "(and an optional `id`) with the chosen metrics.",
    )
    p.add_argument("file", help="JSONL or Parquet records")
    p.add_argument(
        "--metrics",
        default="refusal,quality",
        help="comma-separated metric names (default: refusal,quality)",
    )
    p.add_argument("--out", help="per-item values (.jsonl or .parquet)")
    add_metric_options(p)
    add_model_options(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser(
        "validate-refusal", help="accuracy of the refusal classifier on the labelled set"
    )
    p.set_defaults(handler=cmd_validate_refusal)


# --- benchmark runs -----------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from steerbench.config import load_config
    from steerbench.runner import Runner, describe_plan

    config = load_config("quick" if args.quick else args.config)
    if args.model:
        config.models = list(args.model)
    if args.device:
        config.device = args.device
    if args.dtype:
        config.dtype = args.dtype
    results = Path(args.results or Path("results") / config.name)
    executor = None
    if args.executor == "ray":
        from steerbench.executors import RayExecutor, _import_ray

        _import_ray()  # fail fast, with the install hint, before any work
        executor = RayExecutor(args.ray_address, args.ray_cpus_per_task, args.ray_gpus_per_task)
    if args.dry_run:
        print(describe_plan(config, results))
        return 0
    start = time.perf_counter()
    summary = Runner(
        config,
        results,
        tracking_uri=args.tracking_uri,
        progress=not args.quiet,
        executor=executor,
    ).run()
    minutes = (time.perf_counter() - start) / 60
    print(
        f"{config.name}: {summary['cells']} cells ({summary['ran']} run now) in "
        f"{minutes:.1f} min -> {results}/results.parquet, {results}/generations.parquet"
    )
    from steerbench.leaderboard import summary_table

    print(summary_table(results))
    return 0


def register_run_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a benchmark config (the main job)",
        description="Run every (model, method, strength) cell of a benchmark config; "
        "finished cells are skipped on rerun.",
    )
    p.add_argument(
        "config",
        nargs="?",
        default="default",
        help="config YAML or built-in name: default, quick (default: default)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the quick preset (0.5B model, small subset, ~5 min on 2 cores)",
    )
    p.add_argument("--results", help="results directory (default: ./results/<config name>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in results)")
    p.add_argument("--dry-run", action="store_true", help="print the grid and its cost only")
    p.add_argument("--model", action="append", help="override the config's models")
    p.add_argument("--device", help="override the config's device (cpu, cuda, auto)")
    p.add_argument("--dtype", help="override the config's dtype")
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where cells run: this process (default) or a Ray cluster",
    )
    p.add_argument("--ray-address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--ray-cpus-per-task", type=float, default=1.0)
    p.add_argument(
        "--ray-gpus-per-task",
        type=float,
        default=0.0,
        help="GPUs per (model, method) task, e.g. 1 with --device cuda",
    )
    p.set_defaults(handler=cmd_run)


def cmd_leaderboard_build(args: argparse.Namespace) -> int:
    from steerbench.leaderboard import build

    sources = [Path(p) for p in (args.results or [])]
    if not sources and not (Path(args.out) / "results").is_dir():
        sources = sorted(p for p in Path("results").glob("*") if p.is_dir())
    out = build(sources, Path(args.out))
    print(f"leaderboard written to {out}/README.md and {out}/index.html")
    return 0


def cmd_leaderboard_submit(args: argparse.Namespace) -> int:
    from steerbench.leaderboard import submit

    target = submit(Path(args.file), Path(args.leaderboard))
    print(f"accepted {args.file} -> {target}; run `steerbench leaderboard build` to publish")
    return 0


def register_leaderboard_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="build or submit to the leaderboard")
    board = p.add_subparsers(dest="leaderboard_command", metavar="ACTION", required=True)
    b = board.add_parser(
        "build",
        help="turn results directories into leaderboard/",
        description="Write README.md, index.html and plots from results.",
    )
    b.add_argument(
        "--results",
        action="append",
        help="results directory or results.parquet (repeatable; default: "
        "every directory under ./results)",
    )
    b.add_argument("--out", default="leaderboard", help="output directory (default: leaderboard)")
    b.set_defaults(handler=cmd_leaderboard_build)
    s = board.add_parser(
        "submit",
        help="validate a results.parquet and add it",
        description="Validate schema and provenance, then copy the file into "
        "<leaderboard>/results/.",
    )
    s.add_argument("file", help="results.parquet to submit")
    s.add_argument("--leaderboard", default="leaderboard", help="leaderboard directory")
    s.set_defaults(handler=cmd_leaderboard_submit)


# --- sparse autoencoders ------------------------------------------------------------------


def cmd_sae_train(args: argparse.Namespace) -> int:
    from steerbench import sae as sae_lib
    from steerbench.adapter import ModelAdapter

    settings = sae_lib.SAETrainingSettings(
        width=args.width,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        l1_coefficient=args.l1,
        max_tokens=args.max_tokens,
    )
    out = Path(args.out)
    loaded = load_from_args(args)
    adapter = ModelAdapter.from_model(loaded.model)
    layer = (
        args.layer if args.layer is not None else sae_lib.default_training_layer(adapter.n_layers)
    )
    if not 0 <= layer < adapter.n_layers:
        raise SteerbenchError(f"--layer must be in 0..{adapter.n_layers - 1}, got {layer}")
    cache = out / "activations.safetensors"
    start = time.perf_counter()
    if cache.is_file():
        activations = sae_lib.load_cached_residuals(cache)
        log.info("Reusing %d cached activations from %s", len(activations), cache)
    else:
        activations = sae_lib.collect_residuals(
            loaded.model,
            loaded.tokenizer,
            sae_lib.training_texts(),
            layer,
            fmt=prompt_format_from_args(args),
            max_tokens=settings.max_tokens,
        )
        sae_lib.cache_residuals(
            cache,
            activations,
            {"model": loaded.name, "layer": layer, "texts": list(sae_lib.TEXT_MIX)},
        )
    collected = time.perf_counter() - start
    sae, report = sae_lib.train_sae(
        activations, settings, hook_name=f"resid_post.{layer}", model_name=loaded.name
    )
    report["collect_seconds"] = collected
    sae_lib.save_sae(sae, out, report, settings, layer)
    print(
        f"SAE {adapter.d_model} -> {settings.width} on resid_post.{layer} of {loaded.name}: "
        f"{report['train_tokens']:,} training tokens, {settings.steps} steps x "
        f"{settings.batch_size}"
    )
    print(
        f"  reconstruction MSE {report['mse']:.4g}, explained variance "
        f"{report['explained_variance']:.3f}, L0 {report['l0']:.1f}, dead features "
        f"{report['dead_fraction']:.1%}"
    )
    print(
        f"  collect {collected:.0f} s, train {report['train_seconds']:.0f} s -> {out} "
        f"(load with sae_lens.SAE.load_from_disk)"
    )
    return 0


def register_sae_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sae", help="sparse autoencoders (train one offline)")
    actions = p.add_subparsers(dest="sae_command", metavar="ACTION", required=True)
    t = actions.add_parser(
        "train",
        help="train a sae-lens SAE on the model's residual stream",
        description="Collect residual activations over the shipped text mix (cached in "
        "--out) and train a sae-lens StandardTrainingSAE offline.",
    )
    t.add_argument("--out", required=True, help="output directory (sae-lens format)")
    t.add_argument("--layer", type=int, help="residual layer (default: CAA's layer rule)")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--width", type=int, default=4096, help="number of SAE features")
    t.add_argument("--batch-size", type=int, default=2048)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--l1", type=float, default=5.0, help="L1 sparsity coefficient")
    t.add_argument("--max-tokens", type=int, default=200_000, help="activation tokens to use")
    add_model_options(t)
    t.set_defaults(handler=cmd_sae_train)


# --- performance --------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from steerbench.bench import format_table, run_bench
    from steerbench.io import atomic_write_text

    loaded = load_from_args(args)
    figures = run_bench(
        loaded,
        n_discovery=args.n_discovery,
        n_generate=args.n_generate,
        n_reference=args.n_reference,
        new_tokens=args.new_tokens,
        batch_size=args.batch_size,
    )
    print(format_table(figures))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(figures, indent=1) + "\n")
        log.info("Wrote %s", args.json)
    return 0


def register_bench_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure discovery and generation speed against baselines",
        description="Discovery vs a plain forward pass, steered vs unsteered vs "
        "reference-style generation, memory and FLOP/s, in one process.",
    )
    p.add_argument("--json", help="also write the figures as JSON")
    p.add_argument("--n-discovery", type=int, default=200)
    p.add_argument("--n-generate", type=int, default=32)
    p.add_argument(
        "--n-reference", type=int, default=8, help="prompts for the slow one-at-a-time baseline"
    )
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    add_model_options(p)
    p.set_defaults(handler=cmd_bench)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from steerbench.reproduce import run_reproduction

    start = time.perf_counter()
    path = run_reproduction(
        args.model,
        Path(args.results),
        Path(args.out),
        base_model=args.base_model,
        device=args.device,
        dtype=args.dtype,
        progress=not args.quiet,
        limit=args.limit,
    )
    print(f"wrote {path} and its figures in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


def register_reproduce_commands(sub: argparse._SubParsersAction) -> None:
    from steerbench.models import DEFAULT_MODEL

    p = sub.add_parser(
        "reproduce",
        help="check the CNA paper's claims and write REPRODUCTION.md",
        description="Run the paper's analyses on a model (steering grid, circuit layers, "
        "stability, held-out check, keyword vs judge, base vs instruct).",
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--base-model", help="base counterpart of --model, for the overlap analysis")
    p.add_argument(
        "--results",
        default="results/default",
        help="results directory (shared with `steerbench run`; default results/default)",
    )
    p.add_argument("--out", default=".", help="where REPRODUCTION.md and reproduction/ go")
    p.add_argument(
        "--limit", type=int, help="evaluate on this many prompts per set (a quick, rougher check)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.set_defaults(handler=cmd_reproduce)
