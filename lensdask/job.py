"""A job: one YAML file whose sections configure the stages of :data:`lensdask.stages.STAGES`.

Top-level keys are ``workdir`` (where every output goes), one section per stage (its key is
the stage name with underscores: ``mock_survey``, ``select``, ...) and the paths of
artifacts the job takes from elsewhere instead of making them (``catalog``, ``images``,
``model``: any artifact a stage of the table writes). An artifact comes from exactly
one place: the path the job gives, or the stage of the job that makes it. Any path may be
an fsspec URL (``s3://bucket/survey``); ``storage_options`` gives their credentials and
endpoint (:mod:`lensdask.storage`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lensdask import stages as table
from lensdask.config import ConfigError, from_mapping
from lensdask.storage import as_path

DEFAULT_WORKDIR = Path("lensdask-output")


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """A whole job: where it works, the artifacts it is given and its stages' sections.

    A section is also an attribute (``job.select``, ``job.mock_survey``): the stage's
    configuration, or None where the job does not configure the stage.
    """

    workdir: Path = DEFAULT_WORKDIR
    """Folder for every output of the job (relative paths: to the current directory)."""
    given: Mapping[str, Path] = field(default_factory=dict)
    """Artifacts the job takes from elsewhere (``catalog``, ``images``, ``model``), by name."""
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    """fsspec options of every URL of the job (``s3://...``: ``key``, ``secret``,
    ``client_kwargs: {endpoint_url: ...}``); without them, credentials come from the
    environment and fsspec's configuration."""
    sections: Mapping[str, Any] = field(default_factory=dict)
    """Configuration of each stage the job runs, by section key."""

    def __post_init__(self) -> None:
        options = dict(self.storage_options)
        object.__setattr__(self, "storage_options", options)
        object.__setattr__(self, "workdir", as_path(self.workdir, storage_options=options))
        given = {k: as_path(v, storage_options=options) for k, v in self.given.items()}
        object.__setattr__(self, "given", given)
        sections = dict(self.sections)
        for stage in table.STAGES:
            if stage.always and sections.get(stage.section) is None:
                sections[stage.section] = stage.config()
        object.__setattr__(self, "sections", sections)
        for stage in self.stages():
            needed = [item.artifact for item in stage.inputs if item.required]
            for artifact in [*needed, *stage.outputs]:
                self._sources(artifact)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        if any(stage.section == name for stage in table.STAGES):
            return None
        raise AttributeError(f"a job has no section or attribute {name!r}")

    def stages(self) -> list[table.Stage]:
        """The stages the job configures, in run order."""
        return [stage for stage in table.STAGES if self.sections.get(stage.section) is not None]

    def _sources(self, artifact: str) -> list[str]:
        """Where ``artifact`` comes from; more than one, or none for an input with no
        default place, is an error."""
        makers = [stage.section for stage in self.stages() if artifact in stage.outputs]
        given = [artifact] if artifact in self.given else []
        defaults = {s.outputs[artifact] for s in table.STAGES if artifact in s.outputs}
        if len(given + makers) > 1 or (not given and not makers and len(defaults) != 1):
            every = [s.section for s in table.STAGES if artifact in s.outputs]
            raise ConfigError(
                f"a job takes its {artifact} from exactly one of: {artifact} (a path), "
                f"{', '.join(every)}; got {', '.join(given + makers) or 'none'}"
            )
        return given + makers

    def path(self, artifact: str) -> Path | None:
        """Where ``artifact`` is: the path the job gives, else where the job's stage that
        makes it writes it, else where the one stage able to make it would (an earlier
        run's output), else None."""
        if artifact in self.given:
            return self.given[artifact]
        for stage in self.stages():
            if artifact in stage.outputs:
                return self.workdir / stage.outputs[artifact]
        defaults = {s.outputs[artifact] for s in table.STAGES if artifact in s.outputs}
        return self.workdir / defaults.pop() if len(defaults) == 1 else None

    def io(self, stage: table.Stage) -> table.StageIO:
        """The paths ``stage`` reads and writes in this job."""
        names = [i.artifact for i in stage.inputs] + list(stage.outputs)
        return table.StageIO(stage.name, {name: self.path(name) for name in names})


def job_from_mapping(data: Mapping[str, Any] | None) -> JobConfig:
    """Build a :class:`JobConfig` from the mapping of a job file, checking every key."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"job: expected a mapping of sections, got {data!r}")
    sections = {stage.section: stage for stage in table.STAGES}
    known = ["workdir", "storage_options", *sections, *table.artifact_names()]
    unknown = sorted(str(key) for key in (data or {}) if key not in known)
    if unknown:
        raise ConfigError(
            f"top level: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    workdir, given, configured, options = DEFAULT_WORKDIR, {}, {}, {}
    for key, value in (data or {}).items():
        if key == "workdir":
            workdir = value
        elif key == "storage_options":
            if not isinstance(value, Mapping):
                raise ConfigError(f"storage_options: expected a mapping, got {value!r}")
            options = dict(value)
        elif key in sections:
            stage = sections[key]
            if value is not None or stage.always:
                configured[key] = from_mapping(stage.config, value, where=key)
        elif value is not None:
            given[key] = value
    return JobConfig(workdir=workdir, given=given, sections=configured, storage_options=options)


def load_job(path: str | Path) -> JobConfig:
    """Read a job YAML file into a :class:`JobConfig`, with errors naming the file and key."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"job file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: a job file is a mapping of sections")
    try:
        return job_from_mapping(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
