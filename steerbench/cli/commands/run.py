"""``steerbench run`` and ``steerbench leaderboard``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger("steerbench")


def cmd_run(args: argparse.Namespace) -> int:
    from steerbench.run.config import load_config
    from steerbench.run.estimate import describe_plan
    from steerbench.studies.benchmark import run_benchmark

    config = load_config(quick_variant(args.config) if args.quick else args.config)
    if args.model:
        config.models = list(args.model)
    if args.device:
        config.device = args.device
    if args.dtype:
        config.dtype = args.dtype
    results = Path(args.results or Path("results") / config.name)
    executor = None
    if args.executor == "ray":
        from steerbench.run.executors import RayExecutor, _import_ray

        _import_ray()  # fail fast, with the install hint, before any work
        executor = RayExecutor(args.ray_address, args.ray_cpus_per_task, args.ray_gpus_per_task)
    if args.dry_run:
        print(describe_plan(config, results))
        return 0
    start = time.perf_counter()
    summary = run_benchmark(
        config,
        results,
        tracking_uri=args.tracking_uri,
        progress=not args.quiet,
        executor=executor,
    )
    minutes = (time.perf_counter() - start) / 60
    evaluated = (
        f"; {summary['evaluated']} chosen strengths evaluated" if "evaluated" in summary else ""
    )
    from steerbench.publish.tables import summary_table

    where = f"{results}/<behaviour>/" if config.behaviours else f"{results}/"
    print(
        f"{config.name}: {summary['cells']} cells ({summary['ran']} run now{evaluated}) in "
        f"{minutes:.1f} min -> {where}results.parquet, {where}generations.parquet"
    )
    if config.behaviours is None:
        print(summary_table(results))
        return 0
    for name in config.behaviours.names:
        print(f"\n{name}:\n{summary_table(results / name)}")
    print(f"\nthe board: steerbench leaderboard behaviours {results}")
    return 0


def quick_variant(config: str) -> str:
    """``--quick``: the built-in ``<config>-quick`` where there is one (behaviours), else the
    quick preset."""
    from steerbench.run.config import BUILTIN_CONFIGS

    return f"{config}-quick" if f"{config}-quick" in BUILTIN_CONFIGS else "quick"


def register_run_commands(sub: argparse._SubParsersAction) -> None:
    from steerbench.run.config import BUILTIN_CONFIGS

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
        help=f"config YAML or built-in name: {', '.join(BUILTIN_CONFIGS)} (default: default)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the quick preset (0.5B model, 6 cells; about 10 min on 2 cores in float32); "
        "with a config that has one, its own quick variant (behaviours -> behaviours-quick)",
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
    from steerbench.publish.leaderboard import build
    from steerbench.publish.sources import published_sources

    sources = [Path(p) for p in (args.results or [])]
    if args.published:
        sources += published_sources(Path(args.out))
    if not sources:  # this machine's runs, ahead of (and never replaced by) submissions
        sources = sorted(p for p in Path("results").glob("*") if (p / "results.parquet").is_file())
    if not sources:  # nothing run here: the published results the repository ships
        sources = published_sources(Path(args.out))
    out = build(sources, Path(args.out), readme=Path(args.readme) if args.readme else None)
    print(f"leaderboard written to {out}/README.md and {out}/index.html")
    return 0


def cmd_leaderboard_publish(args: argparse.Namespace) -> int:
    from steerbench.publish.intake import publish

    target = publish(Path(args.results), Path(args.leaderboard), args.name)
    print(f"published {args.results} -> {target}; run `steerbench leaderboard build --published`")
    return 0


def cmd_leaderboard_submit(args: argparse.Namespace) -> int:
    from steerbench.publish.intake import submit

    target = submit(Path(args.file), Path(args.leaderboard))
    print(f"accepted {args.file} -> {target}; run `steerbench leaderboard build` to publish")
    return 0


def cmd_leaderboard_behaviours(args: argparse.Namespace) -> int:
    from steerbench.publish.behaviour_board import behaviour_dirs
    from steerbench.publish.behaviour_page import build_behaviour_board
    from steerbench.publish.intake import publish

    out = Path(args.out)
    if args.results:
        for directory in behaviour_dirs(Path(args.results)):
            publish(directory, out, directory.name)
    build_behaviour_board(out / "results", out)
    print(f"behaviours board written to {out}/README.md (from {out}/results/)")
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
        "every directory under ./results, or the published results when there is none)",
    )
    b.add_argument(
        "--published",
        action="store_true",
        help="build from the results published in <out>/results/ (what the repository's "
        "leaderboard and README tables are built from; see `leaderboard publish`)",
    )
    b.add_argument("--out", default="leaderboard", help="output directory (default: leaderboard)")
    b.add_argument(
        "--readme",
        help="also replace the tables between <!-- leaderboard:start --> and "
        "<!-- leaderboard:end --> in this file (the project README's headline tables)",
    )
    b.set_defaults(handler=cmd_leaderboard_build)
    beh = board.add_parser(
        "behaviours",
        help="build the behaviours board (method x behaviour, entanglement, dose-response)",
        description="Publish a behaviours run's folders (one per behaviour) into "
        "<out>/results/ and build <out>/README.md and its figures from there; without a "
        "results directory, rebuild from what <out>/results/ holds.",
    )
    beh.add_argument(
        "results", nargs="?", help="a behaviours run's results (e.g. results/behaviours)"
    )
    beh.add_argument(
        "--out",
        default="leaderboard/behaviours",
        help="board directory (default: leaderboard/behaviours)",
    )
    beh.set_defaults(handler=cmd_leaderboard_behaviours)
    pub = board.add_parser(
        "publish",
        help="copy a results directory into <leaderboard>/results/ (the published data)",
        description="Copy results.parquet, generations.parquet, a freshly computed "
        "comparisons.parquet, config.resolved.yaml and splits.json of a results directory "
        "into <leaderboard>/results/<name>/, from which `leaderboard build --published` "
        "rebuilds the published tables.",
    )
    pub.add_argument("results", help="results directory (e.g. results/default)")
    pub.add_argument("--leaderboard", default="leaderboard", help="leaderboard directory")
    pub.add_argument("--name", help="folder name under results/ (default: the directory's)")
    pub.set_defaults(handler=cmd_leaderboard_publish)
    s = board.add_parser(
        "submit",
        help="check a results.parquet and add it",
        description="Validate schema and provenance, then copy the file into "
        "<leaderboard>/results/.",
    )
    s.add_argument("file", help="results.parquet to submit")
    s.add_argument("--leaderboard", default="leaderboard", help="leaderboard directory")
    s.set_defaults(handler=cmd_leaderboard_submit)
