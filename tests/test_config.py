"""Job files: YAML into frozen dataclasses, with errors that name the file and the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lensdask.config import BandSpec, ConfigError, MockSurveyConfig, SelectConfig
from lensdask.job import JobConfig, load_job

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_demo_job_loads_into_typed_sections():
    job = load_job(REPO / "jobs" / "demo.yaml")
    assert isinstance(job.mock_survey, MockSurveyConfig)
    assert job.mock_survey.tiles == 4
    assert job.mock_survey.images is True
    assert [band.name for band in job.mock_survey.bands] == ["r", "g", "i"]
    assert job.mock_survey.bands[0] == BandSpec(name="r", seeing=0.7, depth=25.0)
    assert job.select == SelectConfig(extra_columns=("MASK", "TRUE_TYPE", "TRUE_LENS"))
    assert job.mock_survey.lens_fraction == 0.1
    assert (job.train.width, job.train.epochs) == (0.125, 4)
    assert job.score is not None and job.stamps is not None
    assert dict(job.candidates.thresholds) == {"LRG": 0.75, "BG": 0.98}
    assert job.workdir == Path("lensdask-demo")


def test_every_shipped_job_file_loads():
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        assert isinstance(load_job(path), JobConfig), path


def test_configs_are_frozen():
    config = SelectConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bg_mag_max = 22.0  # type: ignore[misc]


def test_unknown_key_names_file_section_and_key(tmp_path):
    path = write(tmp_path, "mock_survey:\n  tilez: 3\n")
    with pytest.raises(ConfigError, match=r"job\.yaml: mock_survey: unknown key\(s\) tilez"):
        load_job(path)


def test_bad_value_names_the_parameter(tmp_path):
    path = write(tmp_path, "mock_survey:\n  tile_size: 2.5\n")
    with pytest.raises(
        ConfigError, match=r"job\.yaml: mock_survey\.tile_size: must be in \(0, 1\]"
    ):
        load_job(path)
    path = write(tmp_path, "mock_survey:\n  tiles: many\n")
    with pytest.raises(
        ConfigError, match=r"job\.yaml: mock_survey\.tiles: expected int, got 'many'"
    ):
        load_job(path)


def test_band_given_by_name_or_mapping(tmp_path):
    path = write(
        tmp_path,
        "mock_survey:\n  bands: [r, {name: z, seeing: 0.9, depth: 23.0}, {name: g, seeing: 1.1}]\n",
    )
    bands = load_job(path).mock_survey.bands
    assert bands[1] == BandSpec(name="z", seeing=0.9, depth=23.0)
    assert bands[2] == BandSpec(name="g", seeing=1.1, depth=25.1)  # KiDS depth kept


def test_r_band_is_required():
    with pytest.raises(ConfigError, match="r band is required"):
        MockSurveyConfig(bands=(BandSpec.kids("g"),))


def test_job_needs_exactly_one_catalog_source(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of"):
        load_job(write(tmp_path, "workdir: x\n"))
    with pytest.raises(ConfigError, match="exactly one of"):
        load_job(write(tmp_path, "catalog: a.parquet\nmock_survey: {tiles: 1}\n"))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job(write(tmp_path, "mock_survey: [unclosed\n"))


def test_column_map_must_map_names_to_names(tmp_path):
    path = write(tmp_path, "catalog: c\nselect:\n  column_map: {MAG_AUTO: 3}\n")
    with pytest.raises(ConfigError, match=r"job\.yaml: select\.column_map"):
        load_job(path)


def test_cutout_config_validation():
    from lensdask.config import CutoutConfig

    assert CutoutConfig().bands == ("r", "g", "i")
    with pytest.raises(ConfigError, match=r"cutouts\.size: must be a positive odd number"):
        CutoutConfig(size=100)
    with pytest.raises(ConfigError, match=r"cutouts\.image_pattern: needs \{tile\} and \{band\}"):
        CutoutConfig(image_pattern="{tile}.fits")
    with pytest.raises(ConfigError, match=r"cutouts\.bands: repeated band"):
        CutoutConfig(bands=("r", "r"))


def test_bad_tile_regex_is_named():
    from lensdask.config import IngestConfig

    with pytest.raises(ConfigError, match=r"ingest\.tile_regex: not a regular expression"):
        IngestConfig(tile_regex="(unclosed")
    with pytest.raises(ConfigError, match=r"ingest\.tile_regex: needs one or two groups"):
        IngestConfig(tile_regex="KIDS")


def test_training_schedule_and_warmup_are_checked(tmp_path):
    path = write(tmp_path, "train:\n  schedule: step\n")
    with pytest.raises(ConfigError, match=r"job\.yaml: train\.schedule: one of cosine, plateau"):
        load_job(path)
    path = write(tmp_path, "train:\n  epochs: 2\n  warmup: 2\n")
    with pytest.raises(ConfigError, match=r"train\.warmup: .*fewer than train\.epochs \(2\)"):
        load_job(path)
