"""Real survey data as it comes (issue 17): a mock survey in the KiDS DR4 layout (DR4 file
names, weight and flag maps beside the coadds, tile-compressed images, FITS catalogs) runs
through the input settings of jobs/kids-dr4.yaml with zero renaming, and every cutout equals
astropy's Cutout2D on astropy's own decompression of the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.formats.cutout_store import complete_tiles, read_tile
from lensdask.testing import cutout2d_stamps

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from lensdask.testing import write_untrained_model

    return write_untrained_model(tmp_path_factory.mktemp("model") / "m", seed=3)


def dr4_download(folder: Path, client, *, compress: str | None) -> Path:
    """A mock KiDS DR4 download: KiDS_DR4.0_*_{sci,wei,msk}.fits[.fz], FITS catalogs."""
    from lensdask.config import BandSpec, MockSurveyConfig
    from lensdask.mock.survey import make_mock_survey

    config = MockSurveyConfig(
        tiles=2,
        tile_size=0.04,
        seed=4,
        images=True,
        bands=(BandSpec.kids("r"), BandSpec.kids("g")),
        lrg_density=20000,
        layout="kids-dr4",
        compress=compress,
    )
    make_mock_survey(folder, config=config, client=client, progress=False)
    return folder


def dr4_job(path: Path, download: Path, model: Path) -> Path:
    """The input settings of jobs/kids-dr4.yaml (catalog ingest, images, their index), with
    the paths of the download, a model instead of training, and the stages up to the
    candidates."""
    shipped = yaml.safe_load((ROOT / "jobs" / "kids-dr4.yaml").read_text())
    job = {
        "workdir": str(path.parent / "work"),
        "ingest": {**shipped["ingest"], "source": str(download / "catalogs")},
        "images": str(download / "images"),
        "index_images": shipped["index_images"],
        "select": shipped["select"],
        "cutouts": {**shipped["cutouts"], "bands": ["r", "g"]},
        "model": str(model),
        "score": {},
        "candidates": {"thresholds": {"LRG": 0.0, "BG": 0.0}},
    }
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("compress", [None, "GZIP_2", "RICE_1"])
def test_a_dr4_layout_runs_through_the_dr4_job_settings(compress, tmp_path, client, model):
    download = dr4_download(tmp_path / "download", client, compress=compress)
    names = sorted(p.name for p in (download / "images").iterdir())
    suffix = ".fits.fz" if compress else ".fits"
    assert f"KiDS_DR4.0_0.0_-0.5_r_sci{suffix}" in names
    assert f"KiDS_DR4.0_0.0_-0.5_r_wei{suffix}" in names
    job = dr4_job(tmp_path / "job.yaml", download, model)
    args = ["run", str(job), "--cluster", client.scheduler.address, "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    work = tmp_path / "work"
    index = pd.read_parquet(work / "images.parquet")
    assert sorted(set(index["tile"])) == ["KIDS_0.0_-0.5", "KIDS_1.0_-0.5"]
    assert set(index["compression"]) == {compress or "none"}
    assert index["weight_path"].str.endswith(f"_wei{suffix}").all()
    targets = pd.read_parquet(work / "targets.parquet")
    store = work / "cutouts.zarr"
    assert complete_tiles(store) == sorted(set(targets["THELI_NAME"]))
    bad_fractions: list[float] = []
    store_bad: dict[str, float] = {}
    for tile in complete_tiles(store):
        got = read_tile(store, tile)
        rows = targets.set_index("ID").loc[[str(i) for i in got.ids]]
        ra, dec = tile.split("_")[1:]
        for band in ("r", "g"):
            sci = download / "images" / f"KiDS_DR4.0_{ra}_{dec}_{band}_sci{suffix}"
            with fits.open(sci) as hdul:  # astropy decompresses
                hdu = hdul[1] if compress else hdul[0]
                data, wcs = np.asarray(hdu.data), WCS(hdu.header)
            want = cutout2d_stamps(
                data, SkyCoord(rows["RAJ2000"], rows["DECJ2000"], unit="deg"), wcs=wcs
            )
            np.testing.assert_array_equal(got.images[band], want)
            # bad pixels counted straight from the weight and flag maps, cut like the image
            bad = ~np.isfinite(want)
            for product in ("wei", "msk"):
                path = sci.with_name(sci.name.replace("_sci", f"_{product}"))
                with fits.open(path) as hdul:
                    hdu = hdul[1] if compress else hdul[0]
                    data = np.asarray(hdu.data, dtype=np.float32)
                stamps = cutout2d_stamps(
                    data, SkyCoord(rows["RAJ2000"], rows["DECJ2000"], unit="deg"), wcs=wcs
                )
                if product == "wei":
                    bad |= np.isfinite(stamps) & (stamps <= 0)
                else:  # the default flag bits: all but the secondary and tertiary halos
                    bits = np.where(np.isfinite(stamps), stamps, 0).astype(np.int64)
                    bad |= (bits & (1 | 2 | 4 | 8 | 64 | 128)) != 0
            want_bad = bad.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)
            np.testing.assert_array_equal(
                got.bad_fraction[:, got.attrs["bands"].index(band)], want_bad
            )
            bad_fractions.extend(want_bad[~got.edge].tolist())
            store_bad.update(zip(got.ids.tolist(), got.bad_fraction[:, 0].tolist(), strict=True))
    # bad columns and star masks reach some stamps that lie wholly inside their image
    assert max(bad_fractions) > 0
    candidates = pd.read_parquet(work / "candidates.parquet")
    assert sorted(candidates["ID"]) == sorted(targets["ID"])  # threshold 0: all scored
    # the scores and the candidates carry the r band's bad fraction of the store
    scores = pd.concat(
        pd.read_parquet(path) for path in sorted((work / "scores.parquet").rglob("KIDS_*.parquet"))
    )
    for table in (scores, candidates):
        got_bad = table.set_index("ID")["bad_fraction"]
        want_bad = pd.Series(store_bad).reindex(got_bad.index)
        np.testing.assert_array_equal(got_bad.to_numpy(), want_bad.to_numpy(np.float32))
    assert (candidates["bad_fraction"] > 0).any()
    # the training set would leave out the stamps above max_bad_fraction, by kind
    from lensdask.config import SimulateConfig
    from lensdask.lensing.simulate import cutout_inventory, leave_out_bad

    limit = SimulateConfig().max_bad_fraction
    inventory = cutout_inventory(store, band="r")
    kept, left_out = leave_out_bad(inventory, max_bad_fraction=limit)
    over = inventory["ID"].map(store_bad) > limit
    assert sum(left_out.values()) == int(over.sum()) == len(inventory) - len(kept)
    assert not set(kept["ID"]) & set(inventory["ID"][over])
    if compress is None:
        assert_placed_by_position(work, client)


def cut_by_index(targets: Path, out: Path, work: Path, client):
    """The r and g cutouts of ``targets`` from the images of the job's image index."""
    from lensdask.config import CutoutConfig
    from lensdask.cutouts.make import make_cutouts

    return make_cutouts(
        targets,
        None,
        out,
        config=CutoutConfig(bands=("r", "g")),
        client=client,
        index=work / "images.parquet",
        progress=False,
    )


def assert_placed_by_position(work: Path, client) -> None:
    """Targets that name no tile are placed on the index's images by position: the same
    groups and cutouts as by their catalog's tile key (the mock's tiles do not overlap)."""

    keyless = work / "keyless.parquet"
    pd.read_parquet(work / "targets.parquet").drop(columns="THELI_NAME").to_parquet(keyless)
    out = work / "placed.zarr"
    report = cut_by_index(keyless, out, work, client)
    assert report.units.ok
    keyed = work / "cutouts.zarr"
    assert complete_tiles(out) == complete_tiles(keyed)
    for tile in complete_tiles(keyed):
        want, got = read_tile(keyed, tile), read_tile(out, tile)
        order = np.argsort(want.ids)
        back = np.argsort(got.ids)
        np.testing.assert_array_equal(got.ids[back], want.ids[order])
        np.testing.assert_array_equal(got.images["r"][back], want.images["r"][order])
    # a rerun places nothing again and remakes no tile
    again = cut_by_index(keyless, out, work, client)
    assert again.written == 0 and again.skipped == len(complete_tiles(keyed))
    assert again.placement.units.results == {} and again.placement.units.skipped == ["keyless"]
    assert_keys_checked(work, client)


def assert_keys_checked(work: Path, client) -> None:
    """Where the targets name their tile, the key wins and the positions check it: targets
    given another tile's key, and a target on no image, are counted and listed with the
    group their position puts them in."""
    from lensdask.cutouts.placement import LISTING

    targets = pd.read_parquet(work / "targets.parquet")
    tiles = sorted(set(targets["THELI_NAME"]))
    moved = targets.groupby("THELI_NAME").head(2).index  # two of each tile change key
    wrong = targets.copy()
    wrong.loc[moved, "THELI_NAME"] = [
        tiles[1 - tiles.index(tile)] for tile in targets.loc[moved, "THELI_NAME"]
    ]
    lost = targets.index[-1]
    wrong.loc[lost, "RAJ2000"] += 10.0  # on no image, still keyed to its tile
    wrong.to_parquet(work / "rekeyed.parquet")
    report = cut_by_index(work / "rekeyed.parquet", work / "rekeyed.zarr", work, client)
    placement = report.placement
    assert placement.keyed and placement.counts["by_key"] == len(targets)
    assert placement.counts["off_their_key"] == len(moved) + 1
    assert placement.counts["on_no_image"] == 0  # a known key places it, off its image
    listing = pd.read_csv(work / "rekeyed.zarr" / "_placement" / "rekeyed" / LISTING)
    assert set(listing["outcome"]) == {"off_their_key"}
    listed = listing.set_index("ID")
    for row in moved:
        name = targets.loc[row, "ID"]
        assert listed.loc[name, "key"] == wrong.loc[row, "THELI_NAME"]
        assert listed.loc[name, "position_tile"] == targets.loc[row, "THELI_NAME"]
    assert pd.isna(listed.loc[targets.loc[lost, "ID"], "position_tile"])
    # the cutout stage, keeping the keys, finds the same targets outside their tile
    outside = {name for names in report.outside_ids.values() for name in names}
    assert outside == set(listing["ID"])
    assert f"{len(moved) + 1} off their tile key's image" in placement.line()
