"""``lensdask run``: the stages of a job file, chained, each skipping what is complete.

Each stage of :data:`lensdask.stages.STAGES` that the job configures runs in table order,
reading and writing the artifacts of :meth:`lensdask.job.JobConfig.path` (by default
``workdir/<the stage's output>``: ``targets.parquet``, ``cutouts.zarr``, ``trainset.zarr``,
``model``, ``scores.parquet``, ``candidates.parquet``, ``stamps``). ``stages`` picks a
subset, whose inputs must then exist from an earlier run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensdask import stages as table
from lensdask.job import JobConfig

logger = logging.getLogger(__name__)

REPORT_FILE = "performance-report.html"
"""The Dask performance report of a run, in the job's workdir."""


@dataclass
class JobResult:
    """Where a job's outputs are and what each stage reported."""

    outputs: dict[str, Path] = field(default_factory=dict)
    reports: list[Any] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)
    """The stages that ran."""
    next_steps: list[str] = field(default_factory=list)
    """Commands for what comes after the job (grading)."""
    problems: list[str] = field(default_factory=list)
    """Inconsistencies a stage found after its units ran (a partial result)."""

    def add(self, stage: str, outcome: table.StageOutcome) -> None:
        """Take in what ``stage`` reported."""
        self.stages.append(stage)
        self.reports.extend(outcome.reports)
        self.counts.update(outcome.counts)
        self.outputs.update(outcome.outputs)
        self.next_steps.extend(outcome.next_steps)
        self.problems.extend(f"{stage}: {problem}" for problem in outcome.problems)

    def summary_lines(self) -> list[str]:
        """Human-readable lines: counts, where each output is, then the next steps."""
        lines = [f"{key}: {value}" for key, value in self.counts.items()]
        lines += [f"{name} -> {path}" for name, path in self.outputs.items()]
        lines += [f"next: {step}" for step in self.next_steps]
        return lines


def job_stages(config: JobConfig) -> list[str]:
    """The stages ``config`` configures, in run order."""
    return [stage.name for stage in config.stages()]


def chosen_stages(config: JobConfig, stages: Sequence[str] | None) -> list[str]:
    """The stages to run: all configured ones, or those of ``stages`` (checked)."""
    configured = job_stages(config)
    if stages is None:
        return configured
    names = table.stage_names()
    unknown = [stage for stage in stages if stage not in names]
    if unknown:
        raise ValueError(f"--stages: unknown stage(s) {unknown}; stages are {', '.join(names)}")
    missing = [stage for stage in stages if stage not in configured]
    if missing:
        raise ValueError(
            f"--stages: the job has no section for {', '.join(missing)} "
            f"(it configures {', '.join(configured)})"
        )
    return [stage for stage in configured if stage in stages]


def run_job(
    config: JobConfig,
    *,
    client: Any,
    stages: Sequence[str] | None = None,
    progress: bool = True,
) -> JobResult:
    """Run the stages of ``config`` on the cluster of ``client``.

    Parameters
    ----------
    config : JobConfig
        The job.
    client : distributed.Client
        The injected Dask client.
    stages : sequence of str, optional
        Run only these stages (names of :data:`lensdask.stages.STAGES`); their inputs must
        exist.
    progress : bool
        Show progress bars.

    Returns
    -------
    JobResult
    """
    result = JobResult()
    config.workdir.mkdir(parents=True, exist_ok=True)
    for name in chosen_stages(config, stages):
        stage = table.stage_named(name)
        logger.info("run: stage %s", name)
        run = stage.run_function()
        outcome = run(
            getattr(config, stage.section), config.io(stage), client=client, progress=progress
        )
        result.add(name, outcome)
        if all_failed(outcome):
            later = chosen_stages(config, stages)
            later = later[later.index(name) + 1 :]
            if later:
                result.problems.append(
                    f"{name}: every unit failed; not run: {', '.join(later)} (fix the "
                    "failures above and run again)"
                )
            break
    return result


def all_failed(outcome: table.StageOutcome) -> bool:
    """Whether a stage's units all failed: nothing the next stages could use."""
    failures = sum(len(report.failures) for report in outcome.reports)
    done = sum(len(report.results) + len(report.skipped) for report in outcome.reports)
    return failures > 0 and done == 0
