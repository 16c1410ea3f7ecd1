"""Corruption caught on read (issue 16, item 2): Parquet page checksums, Zarr crc32c,
marker hashes of small files, damaged units remade by the next run, and
``lensdask verify``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.formats.model_dir import read_card
from lensdask.formats.parquet import WRITE_OPTIONS, read_file
from lensdask.runner import EXIT_PARTIAL
from lensdask.units import DAMAGED_DIR, MANIFEST_FILE, marker_path

JOB = """\
workdir: {workdir}
mock_survey: {{tiles: 2, tile_size: 0.04, seed: 21, images: true, bands: [r, g],
               lrg_density: 40000}}
model: {model}
cutouts: {{bands: [r, g], size: {size}}}
score: {{}}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    from lensdask.testing import write_untrained_model

    root = tmp_path_factory.mktemp("models")
    return write_untrained_model(root / "one", seed=1), write_untrained_model(root / "two", seed=2)


def invoke(client, *args: object):
    extra = ["--cluster", client.scheduler.address, "--no-progress"]
    return CliRunner().invoke(main, [*map(str, args), *extra])


def write_job(path: Path, *, model: Path, size: int = 101) -> Path:
    path.write_text(JOB.format(workdir=path.parent / "work", model=model, size=size))
    return path


def overwrite_middle(path: Path, nbytes: int) -> None:
    """Overwrite ``nbytes`` in the middle of a file with other bytes, keeping its size."""
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - nbytes // 2
    data[start : start + nbytes] = bytes((b + 1) % 256 for b in data[start : start + nbytes])
    path.write_bytes(bytes(data))


def test_parquet_pages_are_verified_on_read(tmp_path):
    table = pa.table({"ID": [f"id{k}" for k in range(5000)], "p_cnn": np.linspace(0, 1, 5000)})
    path = tmp_path / "s.parquet"
    pq.write_table(table, path, **WRITE_OPTIONS)
    assert read_file(path).equals(table)
    overwrite_middle(path, 64)
    with pytest.raises(OSError, match=r"(?i)checksum"):
        read_file(path)


@pytest.mark.slow
def test_same_size_damage_in_a_cutout_shard_is_caught_and_remade(tmp_path, client, models):
    one, two = models
    job = write_job(tmp_path / "job.yaml", model=one)
    assert invoke(client, "run", job).exit_code == 0
    work = tmp_path / "work"
    clean = tmp_path / "clean"
    shutil.copytree(work, clean)
    tile = sorted(p.name for p in (work / "cutouts.zarr").glob("KIDS_*"))[0]
    (shard,) = [p for p in (work / "cutouts.zarr" / tile / "r" / "c").rglob("*") if p.is_file()]
    overwrite_middle(shard, 200_000)
    # the audit finds it without any stage running
    audit = invoke(client, "verify", work)
    assert audit.exit_code == EXIT_PARTIAL, audit.output
    assert f"DAMAGED cutouts {tile}:" in audit.output and "SHA-256 differs" in audit.output
    # scoring with another model reads it: that tile fails, named, and its cutouts are
    # taken back
    write_job(job, model=two)
    result = invoke(client, "run", job, "--stages", "score")
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert f"FAILED score {tile}" in result.output and "damaged chunk" in result.output
    assert f"{work / 'cutouts.zarr' / tile / 'r'}: damaged chunk" in result.output
    assert not marker_path(work / "cutouts.zarr", tile).exists()
    assert (work / "cutouts.zarr" / DAMAGED_DIR / f"{tile}.json").exists()
    # the next run remakes the damaged tile, then scores it: as a clean run would
    assert invoke(client, "run", job).exit_code == 0
    assert shard.read_bytes() == (clean / shard.relative_to(work)).read_bytes()
    (tmp_path / "clean.yaml").write_text(JOB.format(workdir=clean, model=two, size=101))
    assert invoke(client, "run", tmp_path / "clean.yaml").exit_code == 0
    model_id = read_card(two)["model_id"]
    got = pd.read_parquet(work / "scores.parquet" / model_id).sort_values("ID")
    want = pd.read_parquet(clean / "scores.parquet" / model_id).sort_values("ID")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    assert invoke(client, "verify", work).exit_code == 0


@pytest.mark.slow
def test_verify_names_stale_outputs(tmp_path, client, models):
    one, _ = models
    job = write_job(tmp_path / "job.yaml", model=one)
    assert invoke(client, "run", job).exit_code == 0
    work = tmp_path / "work"
    clean = invoke(client, "verify", work)
    assert clean.exit_code == 0, clean.output
    assert "0 damaged, 0 stale" in clean.output
    # other cutouts, and the scores not remade: every score unit is stale
    write_job(job, model=one, size=51)
    assert invoke(client, "run", job, "--stages", "cutouts").exit_code == 0
    stale = invoke(client, "verify", work)
    assert stale.exit_code == EXIT_PARTIAL
    model_id = read_card(one)["model_id"]
    tiles = sorted(p.name for p in (work / "cutouts.zarr").glob("KIDS_*"))
    for tile in tiles:
        assert f"STALE scores/{model_id} {tile}: made from other cutouts" in stale.output
    # a stage that did not finish has no manifest: its whole output is stale
    (work / "targets.parquet" / MANIFEST_FILE).unlink()
    unfinished = invoke(client, "verify", work)
    assert "STALE targets -: " in unfinished.output and "not finished a run" in unfinished.output
    # a small file changed in place: its SHA-256 no longer agrees, and the rerun remakes it
    (score_file,) = [p for p in (work / "scores.parquet" / model_id).glob(f"{tiles[0]}.parquet")]
    overwrite_middle(score_file, 16)
    damaged = invoke(client, "verify", work)
    assert f"DAMAGED scores/{model_id} {tiles[0]}:" in damaged.output
    assert "SHA-256" in damaged.output
