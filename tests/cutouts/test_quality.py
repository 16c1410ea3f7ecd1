"""Bad-pixel fractions of cutouts from weight and flag maps: a small real FITS image with its
weight and flag maps written by astropy, cut by the tile unit, against counts made by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from lensdask.config import CutoutConfig
from lensdask.cutouts.extract import pixel_quality
from lensdask.cutouts.make import ImagePlace, cutout_tile, tile_images
from lensdask.formats.cutout_store import read_tile, read_tile_columns
from lensdask.units import config_hash

SIZE = 11
TILE = "T"
NY, NX = 60, 80


def sky_wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [NX / 2, NY / 2]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    return wcs


def write_fits(path: Path, data: np.ndarray, wcs: WCS) -> Path:
    fits.PrimaryHDU(data, header=wcs.to_header()).writeto(path)
    return path


@pytest.fixture
def tile_files(tmp_path: Path):
    """An image, its weight map (zero in columns 30-31, as bad columns) and its flag map
    (2: a saturation core, 16: a secondary halo, 1: a readout spike), and three targets."""
    wcs = sky_wcs()
    rng = np.random.default_rng(1)
    image = rng.normal(size=(NY, NX)).astype(np.float32)
    image[20, 12] = np.nan  # a non-finite pixel inside the first stamp
    weight = np.ones((NY, NX), dtype=np.float32)
    weight[:, 30:32] = 0.0
    weight[21, 12] = 0.0  # zero weight and flagged: one bad pixel, counted once
    flag = np.zeros((NY, NX), dtype=np.int16)
    flag[19:23, 10:14] = 2  # saturation core, 16 pixels in the first stamp
    flag[40:45, 50:55] = 16  # secondary halo: not counted by default
    flag[45, 50] |= 1  # readout spike, counted
    paths = {
        "image": write_fits(tmp_path / "sci.fits", image, wcs),
        "weight": write_fits(tmp_path / "wei.fits", weight, wcs),
        "flag": write_fits(tmp_path / "msk.fits", flag, wcs),
    }
    centres = np.array([[12.0, 20.0], [31.0, 30.0], [52.0, 42.0]])  # (x, y), 0-based
    sky = wcs.all_pix2world(centres, 0)
    targets = pd.DataFrame(
        {
            "ID": ["a", "b", "c"],
            "RAJ2000": sky[:, 0],
            "DECJ2000": sky[:, 1],
            "THELI_NAME": TILE,
            "sample": ["LRG", "BG", "LRG"],
        }
    )
    targets.to_parquet(tmp_path / "targets.parquet")
    return paths, tmp_path / "targets.parquet", (image, weight, flag), centres


def expected(arrays, centres, *, flag_bits: int):
    """Fractions counted by hand from the full maps, stamp by stamp."""
    image, weight, flag = arrays
    half = SIZE // 2
    rows = []
    for x, y in centres.astype(int):
        sl = np.s_[y - half : y + half + 1, x - half : x + half + 1]
        zero = weight[sl] <= 0
        flagged = (flag[sl] & flag_bits) != 0
        bad = ~np.isfinite(image[sl]) | zero | flagged
        rows.append((zero.sum() / SIZE**2, flagged.sum() / SIZE**2, bad.sum() / SIZE**2))
    return np.array(rows, dtype=np.float32)


def cut(tmp_path: Path, targets: Path, place: ImagePlace, config: CutoutConfig) -> Path:
    out = tmp_path / "cutouts.zarr"
    out.mkdir(exist_ok=True)
    cutout_tile(
        ([targets], {"r": place}),
        out,
        unit=TILE,
        chash=config_hash(config),
        lineage={},
        config=config,
    )
    return out


@pytest.mark.parametrize("flag_bits", [CutoutConfig().flag_bits, 16, 0])
def test_bad_fractions_match_a_count_by_hand(tile_files, tmp_path: Path, flag_bits: int) -> None:
    paths, targets, arrays, centres = tile_files
    config = CutoutConfig(bands=("r",), size=SIZE, flag_bits=flag_bits)
    place = ImagePlace(
        str(paths["image"]), 0, weight=(str(paths["weight"]), 0), flag=(str(paths["flag"]), 0)
    )
    out = cut(tmp_path, targets, place, config)
    got = read_tile_columns(out, TILE, ["zero_weight_fraction", "flagged_fraction", "bad_fraction"])
    want = expected(arrays, centres, flag_bits=flag_bits)
    np.testing.assert_array_equal(got["zero_weight_fraction"][:, 0], want[:, 0])
    if flag_bits:
        np.testing.assert_array_equal(got["flagged_fraction"][:, 0], want[:, 1])
    else:  # flag maps not used
        assert np.isnan(got["flagged_fraction"]).all()
    np.testing.assert_array_equal(got["bad_fraction"][:, 0], want[:, 2])
    np.testing.assert_array_equal(read_tile(out, TILE).bad_fraction[:, 0], want[:, 2])
    if flag_bits == CutoutConfig().flag_bits:
        # by hand: the 16 core pixels, the NaN and the zero weight among them counted once
        assert want[0, 2] == np.float32(16 / SIZE**2)
        assert want[1, 2] == np.float32(2 * SIZE / SIZE**2)  # the two zero-weight columns
        assert want[2, 2] == np.float32(1 / SIZE**2)  # the readout spike, not the halo


def test_without_maps_bad_fraction_is_the_nonfinite_fraction(tile_files, tmp_path: Path) -> None:
    paths, targets, _, _ = tile_files
    out = cut(tmp_path, targets, ImagePlace(str(paths["image"]), 0), CutoutConfig(bands=("r",)))
    got = read_tile(out, TILE)
    np.testing.assert_array_equal(got.bad_fraction, got.nonfinite_fraction)
    assert got.bad_fraction[0, 0] > 0


def test_keep_maps_stores_the_weight_and_flag_stamps(tile_files, tmp_path: Path) -> None:
    paths, targets, arrays, centres = tile_files
    config = CutoutConfig(bands=("r",), size=SIZE, keep_maps=True)
    place = ImagePlace(
        str(paths["image"]), 0, weight=(str(paths["weight"]), 0), flag=(str(paths["flag"]), 0)
    )
    out = cut(tmp_path, targets, place, config)
    stamps = read_tile_columns(out, TILE, ["r_weight", "r_flag"])
    x, y = centres[1].astype(int)
    half = SIZE // 2
    sl = np.s_[y - half : y + half + 1, x - half : x + half + 1]
    np.testing.assert_array_equal(stamps["r_weight"][1], arrays[1][sl])
    np.testing.assert_array_equal(stamps["r_flag"][1], arrays[2][sl].astype(np.float32))


def test_a_map_on_another_grid_fails_naming_both_files(tile_files, tmp_path: Path) -> None:
    paths, targets, arrays, _ = tile_files
    shifted = sky_wcs()
    shifted.wcs.crpix = [NX / 2 + 3, NY / 2]
    other = write_fits(tmp_path / "wei_shifted.fits", arrays[1], shifted)
    place = ImagePlace(str(paths["image"]), 0, weight=(str(other), 0))
    with pytest.raises(OSError, match=r"wei_shifted\.fits.*sci\.fits"):
        cut(tmp_path, targets, place, CutoutConfig(bands=("r",), size=SIZE))
    small = write_fits(tmp_path / "msk_small.fits", arrays[2][:50], sky_wcs())
    place = ImagePlace(str(paths["image"]), 0, flag=(str(small), 0))
    with pytest.raises(OSError, match=r"msk_small.fits.*shape \(50, 80\).*sci.fits"):
        cut(tmp_path, targets, place, CutoutConfig(bands=("r",), size=SIZE))


def test_tile_images_takes_the_maps_from_the_index(tile_files) -> None:
    paths, _, _, _ = tile_files
    index = pd.DataFrame(
        {
            "tile": [TILE],
            "band": ["r"],
            "path": [str(paths["image"])],
            "hdu": [0],
            "weight_path": [str(paths["weight"])],
            "weight_hdu": [0],
            "flag_path": [None],
            "flag_hdu": [None],
            "compression": ["none"],
            "width": [NX],
            "height": [NY],
            "wcs": [""],
        }
    )
    places = tile_images(TILE, CutoutConfig(bands=("r",)), images=None, index=index)
    assert places["r"] == ImagePlace(str(paths["image"]), 0, (str(paths["weight"]), 0), None)


def test_pixel_quality_counts_each_bad_pixel_once() -> None:
    image = np.zeros((1, 3, 3), dtype=np.float32)
    image[0, 0, 0] = np.nan
    weight = np.ones_like(image)
    weight[0, 0, :2] = 0.0
    flag = np.zeros_like(image)
    flag[0, 0, 1:] = 8.0
    flag[0, 2, 2] = 16.0
    quality = pixel_quality(image, weight=weight, flag=flag, flag_bits=8)
    assert quality.zero_weight_fraction[0] == np.float32(2 / 9)
    assert quality.flagged_fraction[0] == np.float32(2 / 9)
    assert quality.bad_fraction[0] == np.float32(3 / 9)
    bare = pixel_quality(image, flag_bits=8)
    assert np.isnan(bare.zero_weight_fraction).all() and bare.bad_fraction[0] == np.float32(1 / 9)
