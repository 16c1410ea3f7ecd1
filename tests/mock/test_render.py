"""Tests of the mock-imaging rendering kernel against hand-computed and independent values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, ndimage, signal

from lensdask.lensing.psf import moffat_psf
from lensdask.mock import render
from lensdask.mock.render import mag_to_flux, render_sources, sersic_b, sky_sigma

# Literature values of b_n (Ciotti & Bertin 1999; b_0.5 = ln 2 exactly).
B_LITERATURE = {0.5: math.log(2.0), 1.0: 1.678347, 4.0: 7.669249}
DELTA_PSF = np.array([[1.0]])


def render_one(
    shape: tuple[int, int],
    x: float,
    y: float,
    *,
    flux: float = 1000.0,
    n_sersic: float = 1.0,
    r_eff: float = 3.0,
    q: float = 1.0,
    theta: float = 0.0,
    point: bool = False,
    psf: np.ndarray = DELTA_PSF,
    max_stamp: int = 255,
) -> np.ndarray:
    """Render a single source with scalar parameters."""
    return render_sources(
        shape,
        np.array([x]),
        np.array([y]),
        np.array([flux]),
        n_sersic=n_sersic,
        r_eff=r_eff,
        q=q,
        theta=theta,
        point=np.array([point]),
        psf=psf,
        max_stamp=max_stamp,
    )


def moments(image: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centroid (x, y) and central second moments (xx, yy, xy) of an image, in pixels."""
    image = image.astype(np.float64)
    yy, xx = np.indices(image.shape)
    total = image.sum()
    xc = (xx * image).sum() / total
    yc = (yy * image).sum() / total
    mxx = ((xx - xc) ** 2 * image).sum() / total
    myy = ((yy - yc) ** 2 * image).sum() / total
    mxy = ((xx - xc) * (yy - yc) * image).sum() / total
    return xc, yc, mxx, myy, mxy


@pytest.fixture(scope="module")
def kids_psf() -> np.ndarray:
    return moffat_psf(0.7)


# --- moffat_psf ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fwhm", "expected_size"),
    # 4 FWHM = 4 * fwhm / 0.2 pixels from the centre, odd, at least 15.
    [(0.7, 29), (1.0, 41), (0.3, 15)],
)
def test_moffat_default_size_sum_and_dtype(fwhm: float, expected_size: int) -> None:
    psf = moffat_psf(fwhm)
    assert psf.shape == (expected_size, expected_size)
    assert psf.dtype == np.float64
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.unravel_index(psf.argmax(), psf.shape) == (expected_size // 2, expected_size // 2)


def test_moffat_explicit_size() -> None:
    psf = moffat_psf(0.7, size=21)
    assert psf.shape == (21, 21)
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("beta", [2.5, 3.0, 4.765])
def test_moffat_measured_fwhm(beta: float) -> None:
    fwhm, pixel_scale = 0.7, 0.02
    psf = moffat_psf(fwhm, pixel_scale=pixel_scale, beta=beta)
    centre = psf.shape[0] // 2
    row = psf[centre, centre:]
    half = row[0] / 2
    i = int(np.argmax(row < half))
    r_half = i - 1 + (row[i - 1] - half) / (row[i - 1] - row[i])
    assert 2 * r_half * pixel_scale == pytest.approx(fwhm, rel=0.03)


def test_moffat_symmetric() -> None:
    psf = moffat_psf(0.9, pixel_scale=0.2, beta=2.5)
    np.testing.assert_allclose(psf, psf[::-1, :], rtol=1e-12)
    np.testing.assert_allclose(psf, psf[:, ::-1], rtol=1e-12)
    np.testing.assert_allclose(psf, psf.T, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"fwhm": 0.0}, "fwhm"),
        ({"fwhm": -1.0}, "fwhm"),
        ({"fwhm": math.nan}, "fwhm"),
        ({"fwhm": 0.7, "pixel_scale": 0.0}, "pixel_scale"),
        ({"fwhm": 0.7, "beta": 1.0}, "beta"),
        ({"fwhm": 0.7, "size": 20}, "size"),
        ({"fwhm": 0.7, "size": 0}, "size"),
        ({"fwhm": 0.7, "supersample": 0}, "supersample"),
    ],
)
def test_moffat_rejects_bad_parameters(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        moffat_psf(**kwargs)


# --- sersic_b --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0.5, 1.0, 4.0])
def test_sersic_b_encloses_half_the_light(n: float) -> None:
    b = float(sersic_b(n))
    assert b == pytest.approx(B_LITERATURE[n], rel=1e-6)

    def ring(r: float) -> float:
        return math.exp(-b * r ** (1.0 / n)) * r

    inside = integrate.quad(ring, 0.0, 1.0)[0]
    total = inside + integrate.quad(ring, 1.0, math.inf)[0]
    assert inside / total == pytest.approx(0.5, abs=1e-8)


def test_sersic_b_vectorised_and_validated() -> None:
    b = sersic_b(np.array([[0.5, 1.0], [4.0, 1.0]]))
    assert b.shape == (2, 2)
    np.testing.assert_allclose(b[0], [B_LITERATURE[0.5], B_LITERATURE[1.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="n must"):
        sersic_b(np.array([1.0, 0.0]))


# --- render_sources --------------------------------------------------------------------------


def test_no_sources_gives_zero_image(kids_psf: np.ndarray) -> None:
    empty = np.array([])
    image = render_sources(
        (40, 30),
        empty,
        empty,
        empty,
        n_sersic=empty,
        r_eff=empty,
        q=empty,
        theta=empty,
        point=np.array([], dtype=bool),
        psf=kids_psf,
    )
    assert image.shape == (40, 30)
    assert image.dtype == np.float32
    assert not image.any()


def test_flux_conserved_for_mixed_sources(kids_psf: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    n = 60
    x = rng.uniform(150, 350, n)
    y = rng.uniform(150, 250, n)
    flux = rng.uniform(10, 1e4, n)
    image = render_sources(
        (400, 500),
        x,
        y,
        flux,
        n_sersic=rng.uniform(0.5, 6, n),
        r_eff=rng.uniform(0.5, 12, n),
        q=rng.uniform(0.1, 1, n),
        theta=rng.uniform(-np.pi, np.pi, n),
        point=rng.random(n) < 0.3,
        psf=kids_psf,
    )
    assert image.sum(dtype=np.float64) == pytest.approx(flux.sum(), rel=5e-3)


def test_chunking_does_not_change_the_image(
    kids_psf: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(5)
    n = 40
    arguments = {
        "shape": (150, 170),
        "x": rng.uniform(-20, 190, n),
        "y": rng.uniform(-20, 170, n),
        "flux": rng.uniform(10, 1e3, n),
        "n_sersic": rng.uniform(0.5, 4, n),
        "r_eff": rng.uniform(0.5, 6, n),
        "q": rng.uniform(0.2, 1, n),
        "theta": rng.uniform(0, np.pi, n),
        "point": rng.random(n) < 0.3,
        "psf": kids_psf,
    }
    together = render_sources(**arguments)
    monkeypatch.setattr(render, "CHUNK_ELEMENTS", 1)  # one source per chunk
    apart = render_sources(**arguments)
    np.testing.assert_allclose(apart, together, atol=1e-4)
    assert together.sum() > 0


@pytest.mark.parametrize("offset", [(0.0, 0.0), (0.3, -0.2), (-0.45, 0.5), (0.17, 0.41)])
@pytest.mark.parametrize(
    "source",
    [
        {"point": True},
        {"n_sersic": 1.0, "r_eff": 3.0, "q": 1.0},
        {"n_sersic": 4.0, "r_eff": 2.0, "q": 0.6, "theta": 0.3},
        {"n_sersic": 0.5, "r_eff": 1.2, "q": 0.3, "theta": -1.1},
    ],
)
def test_centroid_of_isolated_source(
    kids_psf: np.ndarray, offset: tuple[float, float], source: dict[str, float]
) -> None:
    x, y = 60.0 + offset[0], 55.0 + offset[1]
    image = render_one((110, 120), x, y, psf=kids_psf, **source)
    xc, yc, *_ = moments(image)
    assert abs(xc - x) < 0.02
    assert abs(yc - y) < 0.02


def test_star_at_pixel_centre_is_the_psf(kids_psf: np.ndarray) -> None:
    image = render_one((60, 70), 30.0, 20.0, flux=500.0, point=True, psf=kids_psf)
    r = kids_psf.shape[0] // 2
    np.testing.assert_allclose(image[20 - r : 21 + r, 30 - r : 31 + r], 500.0 * kids_psf, atol=1e-4)
    image[20 - r : 21 + r, 30 - r : 31 + r] = 0.0
    assert np.abs(image).max() < 1e-4


def test_galaxy_is_profile_convolved_with_psf(kids_psf: np.ndarray) -> None:
    source = {"n_sersic": 2.0, "r_eff": 5.0, "q": 0.7, "theta": 1.0}
    r = kids_psf.shape[0] // 2
    # Both stamps evaluate the profile on the same 41 x 41 square. (At a sub-pixel position
    # the two would differ by the ringing of the unblurred profile's sub-pixel shift.)
    sharp = render_one((90, 100), 47.0, 41.0, max_stamp=41, **source)
    blurred = render_one((90, 100), 47.0, 41.0, psf=kids_psf, max_stamp=41 + 2 * r, **source)
    expected = signal.fftconvolve(sharp.astype(np.float64), kids_psf, mode="same")
    np.testing.assert_allclose(blurred, expected, atol=1e-5 * expected.max())


@pytest.mark.parametrize("point", [True, False])
def test_sub_pixel_position_is_a_shift(kids_psf: np.ndarray, point: bool) -> None:
    source = {"n_sersic": 3.0, "r_eff": 1.5, "q": 0.5, "theta": 2.0, "point": point}
    centred = render_one((90, 100), 47.0, 41.0, psf=kids_psf, **source)
    shifted = render_one((90, 100), 47.3, 40.55, psf=kids_psf, **source)
    spectrum = ndimage.fourier_shift(np.fft.fft2(centred.astype(np.float64)), (-0.45, 0.3))
    expected = np.fft.ifft2(spectrum).real
    np.testing.assert_allclose(shifted, expected, atol=1e-4 * expected.max())


@pytest.mark.parametrize("n", [0.5, 1.0, 4.0])
def test_radial_profile_follows_sersic(n: float) -> None:
    r_eff = 8.0
    image = render_one((101, 101), 50.0, 50.0, n_sersic=n, r_eff=r_eff)
    b = B_LITERATURE[n]
    inner, outer = 6, 14
    expected = math.exp(-b * ((outer / r_eff) ** (1 / n) - (inner / r_eff) ** (1 / n)))
    assert image[50, 50 + outer] / image[50, 50 + inner] == pytest.approx(expected, rel=0.01)
    assert image[50 - outer, 50] / image[50, 50 + inner] == pytest.approx(expected, rel=0.01)


def test_second_moment_of_round_exponential_disk() -> None:
    r_eff, half = 8.0, 40
    # 5 r_eff = 40 px, so the stamp is exactly max_stamp = 81 px: the disk is truncated at
    # the square |x|, |y| <= 40.5 px, over which the expected moment is integrated.
    image = render_one((121, 121), 60.0, 60.0, flux=1.0, n_sersic=1.0, r_eff=r_eff, max_stamp=81)
    rows, cols = np.nonzero(image)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 100, 20, 100)
    b = B_LITERATURE[1.0]
    edge = half + 0.5

    def disk(y: float, x: float) -> float:
        return math.exp(-b * math.hypot(x, y) / r_eff)

    norm = integrate.dblquad(disk, 0.0, edge, 0.0, edge)[0]
    second = integrate.dblquad(lambda y, x: x * x * disk(y, x), 0.0, edge, 0.0, edge)[0]
    # Pixel integration adds the variance of a unit box, 1/12 px^2, to the sampled moment.
    expected = second / norm + 1.0 / 12.0
    _, _, mxx, myy, mxy = moments(image)
    assert mxx == pytest.approx(expected, rel=2e-3)
    assert myy == pytest.approx(expected, rel=2e-3)
    assert abs(mxy) < 1e-3 * expected


@pytest.mark.parametrize("theta", [0.5, -1.0, 2.0])
def test_orientation_and_axis_ratio(theta: float) -> None:
    q = 0.4
    image = render_one((121, 121), 60.2, 59.7, n_sersic=1.0, r_eff=6.0, q=q, theta=theta)
    _, _, mxx, myy, mxy = moments(image)
    angle = 0.5 * math.atan2(2.0 * mxy, mxx - myy)
    difference = (angle - theta + math.pi / 2) % math.pi - math.pi / 2
    assert abs(difference) < 0.02
    eigen = np.linalg.eigvalsh([[mxx, mxy], [mxy, myy]]) - 1.0 / 12.0
    assert math.sqrt(eigen[0] / eigen[1]) == pytest.approx(q, rel=0.01)


@pytest.mark.parametrize("point", [True, False])
def test_sources_across_the_border_are_clipped(kids_psf: np.ndarray, point: bool) -> None:
    source = {"r_eff": 4.0, "n_sersic": 2.5, "q": 0.5, "theta": 0.7, "point": point}
    small = render_one((60, 50), -3.3, 2.6, psf=kids_psf, **source)
    # The same source on a larger image, shifted by (+50, +50), cut back to the first one.
    large = render_one((160, 150), 46.7, 52.6, psf=kids_psf, **source)
    np.testing.assert_allclose(small, large[50:110, 50:100], atol=1e-4)
    assert 0 < small.sum() < 0.9 * 1000.0


def test_sources_outside_are_skipped(kids_psf: np.ndarray) -> None:
    x = np.array([-300.0, 50.0, 1e30, 20.0, -1e30])
    y = np.array([10.0, -250.0, 20.0, 1e30, 5.0])
    image = render_sources(
        (40, 60),
        x,
        y,
        np.full(5, 1e4),
        n_sersic=1.0,
        r_eff=np.array([40.0, 3.0, 3.0, 3.0, 3.0]),
        q=1.0,
        theta=0.0,
        point=np.array([False, False, True, False, True]),
        psf=kids_psf,
    )
    assert not image.any()


def test_star_shape_parameters_are_ignored(kids_psf: np.ndarray) -> None:
    star = render_one((50, 50), 25.2, 24.9, point=True, psf=kids_psf)
    nan_star = render_one(
        (50, 50), 25.2, 24.9, point=True, psf=kids_psf, n_sersic=math.nan, r_eff=-1.0, q=5.0
    )
    np.testing.assert_array_equal(star, nan_star)


BAD_PARAMETERS = [
    ({"x": [math.nan]}, "x"),
    ({"x": [[1.0]]}, "x"),
    ({"y": [1.0, 2.0]}, "y"),
    ({"flux": [math.nan]}, "flux"),
    ({"flux": [-1.0]}, "flux"),
    ({"n_sersic": 0.0}, "n_sersic"),
    ({"r_eff": 0.0}, "r_eff"),
    ({"r_eff": math.inf}, "r_eff"),
    ({"q": 0.0}, "q"),
    ({"q": 1.5}, "q"),
    ({"q": math.nan}, "q"),
    ({"theta": math.nan}, "theta"),
    ({"point": [1]}, "point"),
    ({"psf": np.ones((4, 4))}, "psf"),
    ({"psf": np.ones((3, 5))}, "psf"),
    ({"psf": np.zeros((3, 3))}, "psf"),
    ({"shape": (0, 10)}, "shape"),
    ({"shape": (10,)}, "shape"),
    ({"supersample": 0}, "supersample"),
    ({"max_stamp": 64}, "max_stamp"),
    ({"max_stamp": 5}, "max_stamp"),
]


@pytest.mark.parametrize(("override", "name"), BAD_PARAMETERS)
def test_render_rejects_bad_parameters(override: dict[str, object], name: str) -> None:
    arguments: dict[str, object] = {
        "shape": (30, 30),
        "x": [10.0],
        "y": [12.0],
        "flux": [100.0],
        "n_sersic": 1.0,
        "r_eff": 2.0,
        "q": 0.5,
        "theta": 0.1,
        "point": np.array([False]),
        "psf": np.ones((3, 3)) / 9,
    }
    arguments.update(override)
    shape, x, y, flux = (arguments.pop(key) for key in ("shape", "x", "y", "flux"))
    with pytest.raises(ValueError, match=name):
        render_sources(shape, x, y, flux, **arguments)


SOURCE = st.tuples(
    st.floats(100.0, 200.0),  # x
    st.floats(100.0, 200.0),  # y
    st.floats(1.0, 1e5),  # flux
    st.floats(0.3, 8.0),  # n_sersic
    st.floats(0.2, 8.0),  # r_eff
    st.floats(0.05, 1.0),  # q
    st.floats(-4.0, 4.0),  # theta
    st.booleans(),  # point
)


@settings(max_examples=40, deadline=None)
@given(sources=st.lists(SOURCE, min_size=1, max_size=6))
def test_flux_conserved_property(sources: list[tuple[float, ...]]) -> None:
    columns = [np.array(column) for column in zip(*sources, strict=True)]
    x, y, flux, n_sersic, r_eff, q, theta, point = columns
    image = render_sources(
        (300, 300),
        x,
        y,
        flux,
        n_sersic=n_sersic,
        r_eff=r_eff,
        q=q,
        theta=theta,
        point=point.astype(bool),
        psf=moffat_psf(0.8),
    )
    assert np.isfinite(image).all()
    assert image.sum(dtype=np.float64) == pytest.approx(flux.sum(), rel=5e-3)


# --- sky_sigma, mag_to_flux ------------------------------------------------------------------


def test_sky_sigma_hand_computed() -> None:
    # flux(25) = 10**(0.4 * 5) = 100 counts; the 2" aperture holds pi * (1 / 0.2)**2 = 78.54
    # pixels, so sigma = 100 / 5 / sqrt(78.54) = 2.25676 counts.
    assert sky_sigma(25.0) == pytest.approx(2.25676, rel=1e-5)
    assert sky_sigma(25.0, zeropoint=30.0, pixel_scale=0.2, aperture=2.0, nsigma=5.0) == (
        pytest.approx(2.25676, rel=1e-5)
    )
    # One magnitude deeper means 10**-0.4 times the noise.
    assert sky_sigma(26.0) == pytest.approx(2.25676 * 10**-0.4, rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"pixel_scale": 0.0}, "pixel_scale"),
        ({"aperture": -2.0}, "aperture"),
        ({"nsigma": 0}, "nsigma"),
    ],
)
def test_sky_sigma_rejects_bad_parameters(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        sky_sigma(25.0, **kwargs)
    with pytest.raises(ValueError, match="depth"):
        sky_sigma(math.nan)


def test_mag_to_flux() -> None:
    np.testing.assert_allclose(mag_to_flux(np.array([30.0, 25.0, 20.0])), [1.0, 100.0, 1e4])
    assert float(mag_to_flux(22.5, zeropoint=25.0)) == pytest.approx(10.0)
