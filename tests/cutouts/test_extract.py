"""The pure cutout kernel against astropy's Cutout2D: pixel for pixel, edges and corners too."""

from __future__ import annotations

import functools
import mmap
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.nddata import NoOverlapError
from astropy.wcs import WCS
from astropy.wcs.utils import skycoord_to_pixel
from hypothesis import given, settings
from hypothesis import strategies as st

from lensdask.cutouts.extract import (
    CUTOUT_SIZE,
    Stamps,
    centre_inside,
    extract_stamps,
    sky_to_pixel,
    stamp_origin,
)
from lensdask.mock.tiles import Tile, survey_tiles, tile_wcs
from lensdask.testing import cutout2d_stamps

SHAPE = (230, 310)
"""(ny, nx) of the test image: not square, so that swapped axes show."""
TILES = {
    "ra-wraps": survey_tiles(1)[0],  # RA = 0: the image straddles RA 0/360
    "high-dec": Tile(index=9999, ra=150.0, dec=60.0),
}
HALF = CUTOUT_SIZE // 2


def random_image(shape: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """A big-endian float32 image (``>f4``, as FITS stores it) of Gaussian noise."""
    return np.random.default_rng(seed).normal(100.0, 10.0, shape).astype(">f4")


def image_wcs(tile: Tile, shape: tuple[int, int]) -> WCS:
    """The mock survey's TAN WCS of ``tile`` (0.2"/px), centred on an image of ``shape``."""
    ny, nx = shape
    wcs = tile_wcs(tile, size=max(shape), pixel_scale=0.2)
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    wcs.pixel_shape = (nx, ny)
    return wcs


def sky_of(wcs: WCS, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (deg) of 0-based pixel positions."""
    ra, dec = wcs.pixel_to_world_values(np.asarray(x, float), np.asarray(y, float))
    return np.atleast_1d(ra), np.atleast_1d(dec)


def pixel_positions(x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
    """Pixel positions as the (x, y) tuples Cutout2D takes."""
    return [(float(a), float(b)) for a, b in zip(x, y, strict=True)]


def overlap(first: np.ndarray, n: int, size: int) -> np.ndarray:
    """Pixels of ``[first, first + size)`` that lie in ``[0, n)``."""
    return np.clip(np.minimum(first + size, n) - np.maximum(first, 0), 0, None)


def assert_flags_by_hand(
    stamps: Stamps, x: np.ndarray, y: np.ndarray, shape: tuple[int, int], size: int
) -> None:
    """Edge flags and NaN fractions as worked out by hand for an image without NaNs.

    The central pixel is the nearest one, halves going down (``ceil(x - 0.5)``), and the
    stamp spans ``size // 2`` pixels either side of it.
    """
    ny, nx = shape
    half = size // 2
    cx, cy = np.ceil(np.asarray(x) - 0.5), np.ceil(np.asarray(y) - 0.5)
    edge = (cx - half < 0) | (cy - half < 0) | (cx + half > nx - 1) | (cy + half > ny - 1)
    covered = overlap(cx - half, nx, size) * overlap(cy - half, ny, size)
    np.testing.assert_array_equal(stamps.edge, edge)
    np.testing.assert_array_equal(
        stamps.nonfinite_fraction, (1.0 - covered / size**2).astype(np.float32)
    )


def assert_equal_to_cutout2d(stamps: Stamps, reference: np.ndarray) -> None:
    """Every stamp equals Cutout2D's, NaNs in the same places; native float32 out."""
    assert stamps.data.dtype == np.float32 and stamps.data.dtype.isnative
    assert stamps.data.shape == reference.shape
    for k, (got, want) in enumerate(zip(stamps.data, reference, strict=True)):
        assert np.array_equal(got, want, equal_nan=True), f"stamp {k} differs from Cutout2D"


def cut_sky(data: np.ndarray, wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> Stamps:
    """The kernel the way the cutout stage runs it: sky to pixel, then the stamps."""
    x, y = sky_to_pixel(ra, dec, wcs)
    return extract_stamps(data, x, y)


@pytest.fixture(params=sorted(TILES))
def sky_image(request: pytest.FixtureRequest) -> tuple[np.ndarray, WCS]:
    """A ``>f4`` noise image of :data:`SHAPE` with the WCS of one of :data:`TILES`."""
    return random_image(SHAPE, seed=1), image_wcs(TILES[request.param], SHAPE)


# --- sky positions, as the cutout stage uses them ----------------------------------------------


def test_sky_to_pixel_is_skycoord_to_pixel(sky_image: tuple[np.ndarray, WCS]) -> None:
    _, wcs = sky_image
    rng = np.random.default_rng(2)
    x_in, y_in = rng.uniform(-60, SHAPE[1] + 60, 100), rng.uniform(-60, SHAPE[0] + 60, 100)
    ra, dec = sky_of(wcs, x_in, y_in)
    x, y = sky_to_pixel(ra, dec, wcs)
    np.testing.assert_allclose(x, x_in, rtol=0, atol=1e-6)
    np.testing.assert_allclose(y, y_in, rtol=0, atol=1e-6)
    for k in range(0, 100, 7):  # what Cutout2D does, one target at a time
        xk, yk = skycoord_to_pixel(SkyCoord(ra[k], dec[k], unit="deg"), wcs, mode="all")
        assert (x[k], y[k]) == (xk, yk)
    scalar = sky_to_pixel(ra[0], dec[0], wcs)
    assert scalar[0].shape == (1,) and scalar[0][0] == x[0]


def test_random_positions_match_cutout2d(sky_image: tuple[np.ndarray, WCS]) -> None:
    data, wcs = sky_image
    rng = np.random.default_rng(3)
    n = 250  # centres anywhere on the image: inner stamps and edge stamps mixed
    x, y = rng.uniform(-0.49, SHAPE[1] - 0.51, n), rng.uniform(-0.49, SHAPE[0] - 0.51, n)
    ra, dec = sky_of(wcs, x, y)
    stamps = cut_sky(data, wcs, ra, dec)
    reference = cutout2d_stamps(data, SkyCoord(ra, dec, unit="deg"), wcs=wcs)
    assert_equal_to_cutout2d(stamps, reference)
    xs, ys = sky_to_pixel(ra, dec, wcs)
    assert_flags_by_hand(stamps, xs, ys, SHAPE, CUTOUT_SIZE)
    assert 0 < stamps.edge.sum() < n  # both kinds of stamps were compared
    assert np.all(stamps.edge == np.isnan(reference).any(axis=(1, 2)))


EDGE_POSITIONS = {  # (x, y) in pixels of a (230, 310) image; every centre is on the image
    "left": (3.2, 117.0),
    "right": (305.6, 98.3),
    "bottom": (151.0, 0.7),
    "top": (140.4, 228.9),
    "bottom-left": (12.4, 8.8),
    "bottom-right": (301.1, 4.4),
    "top-left": (0.3, 222.6),
    "top-right": (299.7, 219.0),
    "just-inside-bottom-left": (-0.45, -0.45),
    "just-inside-top-right": (309.45, 229.45),
}


@pytest.mark.parametrize("where", sorted(EDGE_POSITIONS))
def test_edges_and_corners_match_cutout2d(where: str, sky_image: tuple[np.ndarray, WCS]) -> None:
    data, wcs = sky_image
    ra, dec = sky_of(wcs, *map(np.atleast_1d, EDGE_POSITIONS[where]))
    stamps = cut_sky(data, wcs, ra, dec)
    reference = cutout2d_stamps(data, SkyCoord(ra, dec, unit="deg"), wcs=wcs)
    assert_equal_to_cutout2d(stamps, reference)
    x, y = sky_to_pixel(ra, dec, wcs)
    assert centre_inside(x, y, SHAPE).all()
    assert stamps.edge.all()
    assert_flags_by_hand(stamps, x, y, SHAPE, CUTOUT_SIZE)
    assert np.isfinite(stamps.data[0, HALF, HALF])  # the centre is on the image
    corner = "-" in where
    # a corner stamp loses rows and columns, an edge stamp only one of them
    rows_lost = np.isnan(stamps.data[0]).all(axis=1).any()
    cols_lost = np.isnan(stamps.data[0]).all(axis=0).any()
    assert (rows_lost and cols_lost) == corner
    assert rows_lost or cols_lost


def test_many_targets_in_one_call_keep_their_order(sky_image: tuple[np.ndarray, WCS]) -> None:
    """Inner stamps are gathered sorted by row, edge stamps one by one: the output must
    still follow the input order."""
    data, wcs = sky_image
    xy = np.array([*EDGE_POSITIONS.values(), (150.0, 200.0), (60.0, 60.0), (150.0, 61.0)])
    order = np.random.default_rng(4).permutation(len(xy))
    ra, dec = sky_of(wcs, xy[order, 0], xy[order, 1])
    stamps = cut_sky(data, wcs, ra, dec)
    assert_equal_to_cutout2d(stamps, cutout2d_stamps(data, SkyCoord(ra, dec, unit="deg"), wcs=wcs))


# --- pixel positions ---------------------------------------------------------------------------


def test_half_pixel_positions_round_up() -> None:
    """``x = k + 0.5`` starts the stamp at ``ceil(k + 0.5 - 50.5) = k - 50``: its central
    pixel is ``k``, as in Cutout2D (which rounds with ``ceil``)."""
    data = random_image(SHAPE, seed=5)
    ny, nx = SHAPE
    k = np.array([-1, 0, 1, 49, 50, 51, 120, nx - 52, nx - 51, nx - 50, nx - 2, nx - 1])
    j = np.array([0, ny - 1, 49, 50, ny - 51, 100, 7, ny - 50, 51, 3, ny - 2, 120])
    x, y = k + 0.5, j + 0.5
    np.testing.assert_array_equal(stamp_origin(x), k - HALF)
    np.testing.assert_array_equal(stamp_origin(y), j - HALF)
    stamps = extract_stamps(data, x, y)
    assert_equal_to_cutout2d(stamps, cutout2d_stamps(data, pixel_positions(x, y)))
    assert_flags_by_hand(stamps, x, y, SHAPE, CUTOUT_SIZE)
    on_image = (k >= 0) & (k < nx)
    np.testing.assert_array_equal(centre_inside(x, y, SHAPE), on_image)
    np.testing.assert_array_equal(stamps.data[on_image, HALF, HALF], data[j, k][on_image])
    assert np.isnan(stamps.data[~on_image, HALF, HALF]).all()


def test_image_smaller_than_the_cutout() -> None:
    data = random_image((40, 30), seed=6)
    x, y = np.array([0.0, 14.5, 29.4, 3.3]), np.array([0.0, 20.0, 39.2, 35.0])
    stamps = extract_stamps(data, x, y)
    assert_equal_to_cutout2d(stamps, cutout2d_stamps(data, pixel_positions(x, y)))
    assert stamps.edge.all()
    assert_flags_by_hand(stamps, x, y, (40, 30), CUTOUT_SIZE)
    # the whole image lies inside each of these stamps
    np.testing.assert_array_equal(stamps.nonfinite_fraction, np.float32(1 - 40 * 30 / 101**2))
    assert (np.isfinite(stamps.data).sum(axis=(1, 2)) == data.size).all()


def test_nans_of_the_image_count_in_nonfinite_fraction() -> None:
    data = random_image(SHAPE, seed=7)
    data[100:110, 150:155] = np.nan  # masked pixels
    x, y = np.array([152.0, 152.0, 2.0]), np.array([105.0, 20.0, 105.0])
    stamps = extract_stamps(data, x, y)
    reference = cutout2d_stamps(data, pixel_positions(x, y))
    assert_equal_to_cutout2d(stamps, reference)
    np.testing.assert_array_equal(stamps.edge, [False, True, True])
    np.testing.assert_array_equal(
        stamps.nonfinite_fraction, np.isnan(reference).mean(axis=(1, 2)).astype(np.float32)
    )
    assert stamps.nonfinite_fraction[0] == np.float32(50 / 101**2)


def test_inf_pixels_of_the_image_count_in_nonfinite_fraction() -> None:
    """+inf and -inf count with NaN, exactly: 3 inf pixels and 2 NaN in one stamp, an
    all-inf region filling another, border padding in a third."""
    data = random_image(SHAPE, seed=9)
    data[100, 60], data[104, 90], data[108, 149] = np.inf, -np.inf, np.inf
    data[101, 70], data[102, 120] = np.nan, np.nan
    data[:, 200:] = np.inf  # every pixel of the second stamp (columns 205 to 305)
    x, y = np.array([100.0, 255.0, 0.0]), np.array([105.0, 105.0, 105.0])
    stamps = extract_stamps(data, x, y)
    reference = cutout2d_stamps(data, pixel_positions(x, y))
    assert_equal_to_cutout2d(stamps, reference)
    # by hand: 5 of 101 x 101; every pixel; the 50 columns left of the image of 101
    assert stamps.nonfinite_fraction[0] == np.float32(5 / 101**2)
    assert stamps.nonfinite_fraction[1] == np.float32(1.0)
    assert stamps.nonfinite_fraction[2] == np.float32(50 / 101)
    assert stamps.nonfinite_fraction.dtype == np.float32
    assert not stamps.edge[0] and not stamps.edge[1] and stamps.edge[2]


def test_no_overlap_gives_an_empty_stamp() -> None:
    """Cutout2D refuses a stamp that misses the image; the kernel returns it all NaN (the
    cutout stage never asks for one: such targets are off their tile)."""
    data = random_image(SHAPE, seed=8)
    x, y = np.array([-51.0, 400.0, 20.0]), np.array([10.0, 10.0, -60.0])
    stamps = extract_stamps(data, x, y)
    assert np.isnan(stamps.data).all()
    np.testing.assert_array_equal(stamps.nonfinite_fraction, 1.0)
    assert stamps.edge.all()
    assert not centre_inside(x, y, SHAPE).any()
    for position in pixel_positions(x, y):
        with pytest.raises(NoOverlapError):
            cutout2d_stamps(data, [position])


def test_no_positions() -> None:
    stamps = extract_stamps(random_image(SHAPE), np.array([]), np.array([]))
    assert stamps.data.shape == (0, CUTOUT_SIZE, CUTOUT_SIZE) and stamps.data.dtype == np.float32
    assert stamps.edge.shape == (0,) and stamps.nonfinite_fraction.shape == (0,)


def test_centre_inside_by_hand() -> None:
    """The central pixel ``ceil(x - 0.5)`` must be on the image: ``-0.5 < x <= n - 0.5``."""
    ny, nx = SHAPE
    x = np.array([-0.5, -0.49, 0.0, nx - 0.5, nx - 0.49, 150.0, 150.0, 150.0, 150.0, np.nan])
    y = np.array([10.0, 10.0, -0.49, 10.0, 10.0, -0.5, ny - 0.5, ny - 0.49, np.inf, 10.0])
    expected = [False, True, True, True, False, False, True, False, False, False]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN and inf positions are answered, not warned about
        for size in (1, 5, 101):
            np.testing.assert_array_equal(centre_inside(x, y, SHAPE, size=size), expected)


@pytest.mark.parametrize("size", [0, 100, -3, 2])
def test_even_or_empty_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="odd"):
        extract_stamps(random_image(SHAPE), np.array([10.0]), np.array([10.0]), size=size)


@pytest.mark.parametrize(
    "x, y", [([np.nan], [10.0]), ([10.0, 11.0], [np.inf, 5.0]), ([-np.inf], [np.nan])]
)
def test_non_finite_positions_are_refused(x: list[float], y: list[float]) -> None:
    with pytest.raises(ValueError, match="finite"):
        extract_stamps(random_image(SHAPE), np.array(x), np.array(y))


# --- properties ----------------------------------------------------------------------------


@functools.cache
def property_image() -> np.ndarray:
    """The image of the hypothesis tests (made once; read only)."""
    image = random_image((150, 170), seed=9)
    image.flags.writeable = False
    return image


def overlapping(n: int, size: int) -> st.SearchStrategy[float]:
    """Positions along an axis of ``n`` pixels whose stamps overlap the image, half-pixel
    positions (where the rounding matters) among them."""
    low, high = -(size // 2) + 0.01, n - 1 + size // 2 - 0.01
    return st.one_of(
        st.floats(low, high, allow_nan=False),
        st.integers(int(np.ceil(low)), int(np.floor(high)) - 1).map(lambda k: k + 0.5),
    )


@st.composite
def stamp_requests(draw: st.DrawFn) -> tuple[int, np.ndarray, np.ndarray]:
    """A stamp size and 1-6 positions on :func:`property_image`."""
    ny, nx = property_image().shape
    size = draw(st.sampled_from([1, 3, 11, 51, 101, 171]))
    n = draw(st.integers(1, 6))
    x = draw(st.lists(overlapping(nx, size), min_size=n, max_size=n))
    y = draw(st.lists(overlapping(ny, size), min_size=n, max_size=n))
    return size, np.array(x), np.array(y)


@settings(max_examples=300, deadline=None)
@given(stamp_requests())
def test_property_agrees_with_cutout2d(request: tuple[int, np.ndarray, np.ndarray]) -> None:
    size, x, y = request
    data = property_image()
    stamps = extract_stamps(data, x, y, size=size)
    assert_equal_to_cutout2d(stamps, cutout2d_stamps(data, pixel_positions(x, y), size=size))
    assert_flags_by_hand(stamps, x, y, data.shape, size)


@settings(max_examples=300, deadline=None)
@given(
    size=st.sampled_from([1, 5, 101]),
    x=st.floats(-60.0, 230.0, allow_nan=False),
    y=st.floats(-60.0, 210.0, allow_nan=False),
)
def test_property_centre_inside_is_a_finite_centre(size: int, x: float, y: float) -> None:
    """``centre_inside`` holds exactly when Cutout2D's central pixel comes from the image."""
    data = property_image()
    try:
        centre = cutout2d_stamps(data, [(x, y)], size=size)[0, size // 2, size // 2]
    except NoOverlapError:
        centre = np.nan
    inside = centre_inside(np.array([x]), np.array([y]), data.shape, size=size)
    assert inside[0] == np.isfinite(centre)


# --- a memory-mapped FITS image, as the cutout stage opens it ------------------------------


def is_memory_mapped(array: np.ndarray) -> bool:
    """Whether the array's memory is a memory map (somewhere down its ``base`` chain)."""
    base = array
    while base is not None:
        if isinstance(base, np.memmap | mmap.mmap):
            return True
        base = getattr(base, "base", None)
    return False


def test_memory_mapped_fits_matches_cutout2d(tmp_path: Path) -> None:
    from astropy.io import fits

    ny, nx = SHAPE
    wcs = image_wcs(TILES["high-dec"], SHAPE)
    path = tmp_path / "tile_r.fits"
    fits.PrimaryHDU(random_image(SHAPE, seed=10), header=wcs.to_header()).writeto(path)
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.uniform(-0.4, nx - 0.6, 40), [0.0, nx - 1.0, 5.0]])
    y = np.concatenate([rng.uniform(-0.4, ny - 0.6, 40), [0.0, ny - 1.0, ny - 3.0]])
    with fits.open(path, memmap=True) as hdul:
        data = hdul[0].data
        assert is_memory_mapped(data) and data.dtype == np.dtype(">f4")
        file_wcs = WCS(hdul[0].header)
        ra, dec = sky_of(file_wcs, x, y)
        stamps = cut_sky(data, file_wcs, ra, dec)
        reference = cutout2d_stamps(data, SkyCoord(ra, dec, unit="deg"), wcs=file_wcs)
        in_memory = cut_sky(np.array(data), file_wcs, ra, dec)
    assert_equal_to_cutout2d(stamps, reference)
    assert np.array_equal(stamps.data, in_memory.data, equal_nan=True)
    assert 0 < stamps.edge.sum() < len(x)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 1024])
def test_block_by_block_reading_gives_the_same_stamps(block_rows: int) -> None:
    """extract_stamps_by_rows equals extract_stamps on the whole image, reads at most
    block_rows + size - 1 rows at a time, never a block without stamps, and with one-row
    blocks only the rows the stamps overlap."""
    from lensdask.cutouts.extract import extract_stamps_by_rows

    image = random_image(SHAPE, seed=4)
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-60, SHAPE[1] + 60, 80), [0.0, SHAPE[1] - 1.0]])
    y = np.concatenate([rng.uniform(-60, 120, 40), rng.uniform(180, SHAPE[0] + 60, 40), [0, 229]])
    reads: list[tuple[int, int]] = []

    def read_rows(start: int, stop: int) -> np.ndarray:
        reads.append((start, stop))
        return image[start:stop]

    size = 31
    expected = extract_stamps(image, x, y, size=size)
    got = extract_stamps_by_rows(read_rows, SHAPE, x, y, size=size, block_rows=block_rows)
    assert np.array_equal(got.data, expected.data, equal_nan=True)
    assert np.array_equal(got.edge, expected.edge)
    assert np.array_equal(got.nonfinite_fraction, expected.nonfinite_fraction)
    assert max(stop - start for start, stop in reads) <= block_rows + size - 1
    needed = np.zeros(SHAPE[0], dtype=bool)
    for first in stamp_origin(y, size=size):
        needed[max(first, 0) : max(first + size, 0)] = True
    read = np.zeros(SHAPE[0], dtype=bool)
    for start, stop in reads:
        assert needed[start:stop].any()
        read[start:stop] = True
    if block_rows == 1:
        assert np.array_equal(read, needed)
