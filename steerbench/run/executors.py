"""Executors: where the cells of a benchmark run. The default is this process; Ray runs
each (model, fitted method) group as a task on a cluster.

A Ray task loads its model, fits its method and runs its cells with exactly the code the
local run uses (``Runner.run_model``), writing finished cells into the shared results
directory; the driver then consolidates the Parquet files and logs MLflow as a local run
would. So a Ray run and a local run of one config produce the same ``results.parquet``
rows, and either can resume the other's results. On a multi-node cluster the results
directory must be on storage every node sees (NFS, a mounted bucket).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from steerbench.errors import SteerbenchError

log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise SteerbenchError("the ray executor needs Ray: pip install 'steerbench[ray]'") from err
    return ray


def run_group(
    config_dict: dict[str, Any],
    results: str,
    model: str,
    labels: list[str],
    tracking_uri: str | None,
    part: str | None = None,
) -> list[str]:
    """Body of a Ray task: run the named cells (or their ``part``) of one (model, method)
    group."""
    from steerbench.run.config import parse_config
    from steerbench.run.plan import evaluation_sets, plan
    from steerbench.run.runner import Runner

    config = parse_config(config_dict, config_dict["name"])
    runner = Runner(
        config,
        Path(results),
        tracking_uri=tracking_uri,
        progress=False,
        part=part,  # type: ignore[arg-type]
    )
    cells = [c for c in plan(config) if c.model == model and c.label in labels]
    runner.run_model(model, cells, evaluation_sets(config), bar=None)
    return labels


class RayExecutor:
    """Submit each (model, fitted method) group as a Ray task with declared resources."""

    def __init__(
        self, address: str | None = None, cpus_per_task: float = 1.0, gpus_per_task: float = 0.0
    ) -> None:
        self.address = address
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task

    def run(self, runner, groups: list[list], bar) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except Exception as err:
                raise SteerbenchError(
                    f"could not start or reach Ray ({err}); check "
                    f"--ray-address or run `ray start --head`"
                ) from err
        task = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task)(run_group)
        config_dict = runner.config.to_dict()
        pending = {
            task.remote(
                config_dict,
                str(runner.results.resolve()),
                group[0].model,
                [c.label for c in group],
                runner.tracking_uri,
                runner.part,
            ): group
            for group in groups
        }
        log.info("Submitted %d groups to Ray (%s)", len(pending), self.address or "local")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            group = pending.pop(done[0])
            ray.get(done[0])  # re-raises a task's error here
            if bar is not None:
                bar.update(len(group))
