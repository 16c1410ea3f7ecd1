"""Batched lensed images against lenstronomy's ImageModel, one system at a time.

Agreement criterion: ``max |ours - lenstronomy| <= 1e-6 * peak`` per system, ``peak`` the
largest pixel of lenstronomy's image. Each hypothesis example renders a batch of several
systems in one call and compares each with its own ImageModel call.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensdask.lensing.grf import grf_perturbation
from lensdask.lensing.image import (
    LENS_PARAMS,
    SOURCE_PARAMS,
    Grid,
    convolve,
    deflection,
    integrate_pixels,
    lensed_images,
    source_brightness,
)
from lensdask.lensing.psf import moffat_psf

pytest.importorskip("lenstronomy")
from lenstronomy.Data.imaging_data import ImageData
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel

pytestmark = pytest.mark.filterwarnings("ignore:`axes` should not be:DeprecationWarning")

TOLERANCE = 1e-6
SIZE, PIXEL = 61, 0.25  # a 15" stamp: arcs of theta_E up to 6" stay mostly inside
N_SOURCE = 3  # main body and two clumps
MOFFAT = moffat_psf(0.7, pixel_scale=PIXEL)


def lopsided_psf() -> np.ndarray:
    """An odd (9 x 9), asymmetric, non-Moffat PSF: an elongated Gaussian plus an offset blob."""
    y, x = np.mgrid[-4:5, -4:5].astype(float)
    kernel = np.exp(-0.5 * ((x / 1.6) ** 2 + (y / 0.9) ** 2))
    kernel += 0.3 * np.exp(-0.5 * ((x - 2) ** 2 + (y + 1) ** 2) / 0.5)
    return kernel / kernel.sum()


PSFS = {"none": None, "moffat": MOFFAT, "lopsided": lopsided_psf()}


@cache
def image_model(supersample: int, psf: str, interpol: bool = False) -> ImageModel:
    c = (SIZE - 1) / 2
    data = ImageData(
        image_data=np.zeros((SIZE, SIZE)),
        transform_pix2angle=np.eye(2) * PIXEL,
        ra_at_xy_0=-c * PIXEL,
        dec_at_xy_0=-c * PIXEL,
    )
    kernel = PSFS[psf]
    point_spread = (
        PSF(psf_type="NONE")
        if kernel is None
        else PSF(psf_type="PIXEL", kernel_point_source=kernel)
    )
    lenses = ["SIE", "SHEAR"] + (["INTERPOL"] if interpol else [])
    return ImageModel(
        data,
        point_spread,
        lens_model_class=LensModel(lenses),
        source_model_class=LightModel(["SERSIC_ELLIPSE"] * N_SOURCE),
        kwargs_numerics={"supersampling_factor": supersample},
    )


def reference(lens, source, *, supersample, psf, interpol=None) -> np.ndarray:
    """lenstronomy's image of each system, one ImageModel call per system."""
    model = image_model(supersample, psf, interpol is not None)
    images = []
    for i in range(lens["theta_E"].size):
        kwargs_lens = [
            {k: float(lens[k][i]) for k in ("theta_E", "e1", "e2", "center_x", "center_y")},
            {"gamma1": float(lens["gamma1"][i]), "gamma2": float(lens["gamma2"][i])},
        ]
        if interpol is not None:
            axis, fx, fy = interpol
            kwargs_lens.append(
                {
                    "grid_interp_x": axis,
                    "grid_interp_y": axis,
                    "f_": np.zeros_like(fx[i]),
                    "f_x": fx[i],
                    "f_y": fy[i],
                }
            )
            # INTERPOL caches its splines on first use: each system needs its own.
            profile = model.LensModel.lens_model.func_list[2]
            for name in ("_f_interp", "_f_x_interp", "_f_y_interp"):
                profile.__dict__.pop(name, None)
        kwargs_source = [
            {k: float(source[k][i, c]) for k in SOURCE_PARAMS} for c in range(N_SOURCE)
        ]
        images.append(model.image(kwargs_lens=kwargs_lens, kwargs_source=kwargs_source))
    return np.stack(images)


def assert_agrees(ours: np.ndarray, ref: np.ndarray) -> None:
    peak = ref.max(axis=(1, 2))
    error = np.abs(ours - ref).max(axis=(1, 2))
    assert np.all(error <= TOLERANCE * peak), f"max |diff| / peak = {error / peak}"


def polar(modulus, angle):
    """Ellipticity or shear components of a modulus and an angle (scalars or arrays)."""
    return modulus * np.cos(2 * angle), modulus * np.sin(2 * angle)


def random_systems(n: int, seed: int) -> tuple[dict, dict]:
    """A fixed batch from the same ranges as :func:`systems`, drawn with NumPy."""
    rng = np.random.default_rng(seed)
    theta_E = rng.uniform(0.5, 6.0, n)
    lens = {"theta_E": theta_E}
    lens["e1"], lens["e2"] = polar(rng.uniform(0, 0.6, n), rng.uniform(0, np.pi, n))
    lens["center_x"], lens["center_y"] = rng.uniform(-0.3, 0.3, (2, n))
    lens["gamma1"], lens["gamma2"] = polar(rng.uniform(0, 0.1, n), rng.uniform(0, np.pi, n))
    offset = rng.uniform(0, 0.6, n) * theta_E
    angle = rng.uniform(0, 2 * np.pi, n)
    sx = lens["center_x"] + offset * np.cos(angle)
    sy = lens["center_y"] + offset * np.sin(angle)
    main_e = polar(rng.uniform(0, 0.6, n), rng.uniform(0, np.pi, n))
    clumps = N_SOURCE - 1
    source = {
        "amp": np.column_stack([np.ones(n), rng.choice([0.0, 0.5, 2.0, 3.0], (n, clumps))]),
        "R_sersic": np.column_stack(
            [rng.uniform(0.05, 1.0, n), rng.uniform(0.02, 0.1, (n, clumps))]
        ),
        "n_sersic": np.column_stack([rng.uniform(0.5, 4.0, n), np.ones((n, clumps))]),
        "e1": np.column_stack([main_e[0], np.zeros((n, clumps))]),
        "e2": np.column_stack([main_e[1], np.zeros((n, clumps))]),
        "center_x": sx[:, None]
        + np.column_stack([np.zeros(n), rng.uniform(-0.4, 0.4, (n, clumps))]),
        "center_y": sy[:, None]
        + np.column_stack([np.zeros(n), rng.uniform(-0.4, 0.4, (n, clumps))]),
    }
    return lens, source


def off_the_rays(centre: float) -> float:
    """Keep a lens centre 1e-6" away from every ray of every grid here.

    Within the SIE's 1e-10" core the deflection changes by theta_E per 1e-10", so the ~1e-17
    rounding of lenstronomy's ray coordinates (its central ray is at (-1.4e-17, -1.4e-17),
    ours at (0, 0)) moves such a ray by ~1e-7" in the source plane: enough to change a
    compact clump's brightness there by 1e-6. Real lens centres never sit on a ray.
    """
    rays = np.concatenate([Grid(SIZE, PIXEL, ss).axis() for ss in (1, 2, 3)])
    return centre + 1e-6 if np.abs(rays - centre).min() < 1e-6 else centre


@st.composite
def systems(draw, n: int = 3) -> tuple[dict, dict]:
    """A batch of ``n`` SIE + shear lenses with a Sersic main body and two clumps each
    (absent, zero-amplitude clumps included), sources near the caustics."""
    floats = st.floats
    lens = {k: [] for k in LENS_PARAMS}
    source = {k: [[] for _ in range(N_SOURCE)] for k in SOURCE_PARAMS}
    for _ in range(n):
        theta_E = draw(floats(0.5, 6.0))
        e1, e2 = polar(draw(floats(0.0, 0.6)), draw(floats(0.0, math.pi)))
        g1, g2 = polar(draw(floats(0.0, 0.1)), draw(floats(0.0, math.pi)))
        cx, cy = off_the_rays(draw(floats(-0.3, 0.3))), off_the_rays(draw(floats(-0.3, 0.3)))
        for k, v in zip(LENS_PARAMS, (theta_E, e1, e2, cx, cy, g1, g2), strict=True):
            lens[k].append(v)
        offset = draw(floats(0.0, 0.6)) * theta_E
        angle = draw(floats(0.0, 2 * math.pi))
        sx, sy = cx + offset * math.cos(angle), cy + offset * math.sin(angle)
        for c in range(N_SOURCE):
            main = c == 0
            se1, se2 = polar(draw(floats(0.0, 0.6)), draw(floats(0.0, math.pi))) if main else (0, 0)
            values = {
                "amp": 1.0 if main else draw(st.sampled_from([0.0, 0.5, 2.0, 3.0])),
                "R_sersic": draw(floats(0.05, 1.0) if main else floats(0.02, 0.1)),
                "n_sersic": draw(floats(0.5, 4.0)) if main else 1.0,
                "e1": se1,
                "e2": se2,
                "center_x": sx + (0.0 if main else draw(floats(-0.4, 0.4))),
                "center_y": sy + (0.0 if main else draw(floats(-0.4, 0.4))),
            }
            for k, v in values.items():
                source[k][c].append(v)
    lens_arrays = {k: np.array(v) for k, v in lens.items()}
    source_arrays = {k: np.array(v).T for k, v in source.items()}  # (B, C)
    return lens_arrays, source_arrays


@pytest.mark.parametrize("supersample", [1, 2, 3])
@pytest.mark.parametrize("psf", ["none", "moffat", "lopsided"])
@given(batch=systems())
@settings(max_examples=8, deadline=None)
def test_lensed_images_match_lenstronomy(batch, supersample, psf):
    lens, source = batch
    grid = Grid(SIZE, PIXEL, supersample)
    ours = lensed_images(lens, source, grid=grid, psf=PSFS[psf])
    assert ours.shape == (3, SIZE, SIZE) and ours.dtype == np.float64
    assert_agrees(ours, reference(lens, source, supersample=supersample, psf=psf))


@given(batch=systems(n=2), slope=st.floats(4.0, 6.0), at_pixels=st.booleans())
@settings(max_examples=8, deadline=None)
def test_perturbed_images_match_lenstronomy_interpol(batch, slope, at_pixels):
    """A GRF deflection at the pixel centres (interpolated linearly to the rays) or at the
    rays agrees with lenstronomy's INTERPOL profile carrying the same grids."""
    lens, source = batch
    grid = Grid(SIZE, PIXEL, 3)
    shape, spacing, axis = (
        ((SIZE, SIZE), PIXEL, grid.pixel_axis())
        if at_pixels
        else (grid.shape, grid.spacing, grid.axis())
    )
    _, fx, fy = grf_perturbation(
        shape,
        spacing=spacing,
        sigma=np.full(2, 1e-2),
        slope=np.full(2, slope),
        rng=np.random.default_rng(1),
    )
    ours = lensed_images(lens, source, grid=grid, psf=MOFFAT, perturbation=(fx, fy))
    ref = reference(lens, source, supersample=3, psf="moffat", interpol=(axis, fx, fy))
    assert_agrees(ours, ref)


def brute_force(lens, source, grid, psf, perturbation=None) -> np.ndarray:
    """Every ray traced and every component evaluated, in float64 (no culling)."""
    ax, ay = deflection(grid, lens, perturbation=perturbation)
    axis = grid.axis()
    images = integrate_pixels(
        source_brightness(axis[None, None, :] - ax, axis[None, :, None] - ay, source), grid
    )
    return images if psf is None else convolve(images, psf)


@given(
    batch=systems(n=4),
    n_sersic=st.floats(0.3, 6.0),
    R_sersic=st.floats(0.01, 2.0),
    negative=st.booleans(),
)
@settings(max_examples=30, deadline=None)
def test_culling_and_float32_stay_within_tolerance(batch, n_sersic, R_sersic, negative):
    """Against tracing everything in float64: extreme profiles (cuspy, tiny, huge, flat,
    negative clumps) still agree to 1e-6 of the peak."""
    lens, source = batch
    source = {k: v.copy() for k, v in source.items()}
    source["n_sersic"][0, 0] = n_sersic
    source["R_sersic"][1, 0] = R_sersic
    if negative:
        source["amp"][2, 1] = -0.5
    grid = Grid(SIZE, PIXEL, 3)
    ours = lensed_images(lens, source, grid=grid, psf=MOFFAT)
    ref = brute_force(lens, source, grid, MOFFAT)
    peak = np.abs(ref).max(axis=(1, 2))
    assert np.all(np.abs(ours - ref).max(axis=(1, 2)) <= TOLERANCE * peak)


def test_pixel_perturbation_equals_its_interpolation_at_the_rays():
    lens, source = random_systems(3, seed=1)
    grid = Grid(SIZE, PIXEL, 3)
    _, fx, fy = grf_perturbation(
        (SIZE, SIZE),
        spacing=PIXEL,
        sigma=np.full(3, 1e-2),
        slope=np.full(3, 4.0),
        rng=np.random.default_rng(5),
    )
    at_pixels = lensed_images(lens, source, grid=grid, psf=None, perturbation=(fx, fy))
    ax, ay = deflection(grid, lens, perturbation=(fx, fy))
    bx, by = deflection(grid, lens)
    at_rays = lensed_images(lens, source, grid=grid, psf=None, perturbation=(ax - bx, ay - by))
    peak = at_rays.max(axis=(1, 2))
    assert np.all(np.abs(at_pixels - at_rays).max(axis=(1, 2)) <= TOLERANCE * peak)


def test_batch_of_one_equals_the_same_system_in_a_batch():
    lens, source = random_systems(4, seed=2)
    grid = Grid(SIZE, PIXEL, 3)
    batch = lensed_images(lens, source, grid=grid, psf=MOFFAT)
    for i in range(4):
        one = lensed_images(
            {k: v[i : i + 1] for k, v in lens.items()},
            {k: v[i : i + 1] for k, v in source.items()},
            grid=grid,
            psf=MOFFAT,
        )
        np.testing.assert_allclose(one[0], batch[i], rtol=0, atol=1e-7 * batch[i].max())


def test_zero_amplitude_gives_a_blank_image():
    lens, source = random_systems(2, seed=3)
    source = {k: v.copy() for k, v in source.items()}
    source["amp"][:] = 0.0
    images = lensed_images(lens, source, grid=Grid(SIZE, PIXEL, 2), psf=MOFFAT)
    assert not images.any()


def test_empty_batch():
    lens = {k: np.zeros(0) for k in LENS_PARAMS}
    source = {k: np.zeros((0, 2)) for k in SOURCE_PARAMS}
    assert lensed_images(lens, source, grid=Grid(11, 0.2, 2), psf=None).shape == (0, 11, 11)


def test_grid_matches_lenstronomy_coordinates():
    grid = Grid(5, 0.2, 3)
    np.testing.assert_allclose(grid.pixel_axis(), [-0.4, -0.2, 0.0, 0.2, 0.4])
    np.testing.assert_allclose(grid.axis()[:3], [-0.4 - 0.2 / 3, -0.4, -0.4 + 0.2 / 3])
    assert grid.shape == (15, 15)
    with pytest.raises(ValueError, match="pixel_scale"):
        Grid(5, 0.0, 1)
    with pytest.raises(ValueError, match="supersample"):
        Grid(5, 0.2, 0)


def test_convolve_matches_scipy_fftconvolve():
    from scipy import signal

    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 23, 17))
    kernel = lopsided_psf()
    expected = np.stack([signal.fftconvolve(im, kernel, mode="same") for im in images])
    np.testing.assert_allclose(convolve(images, kernel), expected, atol=1e-12)
    with pytest.raises(ValueError, match="psf"):
        convolve(images, np.ones((4, 5)))


GOOD_LENS = {
    k: np.array([v]) for k, v in zip(LENS_PARAMS, (1.5, 0.1, 0.0, 0, 0, 0.01, 0), strict=True)
}
GOOD_SOURCE = {
    k: np.array([[v]])
    for k, v in zip(SOURCE_PARAMS, (1.0, 0.3, 1.0, 0.0, 0.1, 0.2, 0), strict=True)
}


@pytest.mark.parametrize(
    ("lens_changes", "source_changes", "match"),
    [
        ({"theta_E": 0.0}, {}, "theta_E"),
        ({"theta_E": math.nan}, {}, "theta_E"),
        ({"e1": 0.9, "e2": 0.5}, {}, r"e1, e2"),
        ({"gamma2": math.nan}, {}, "gamma2"),
        ({"center_y": math.inf}, {}, "center_y"),
        ({}, {"R_sersic": -0.1}, "R_sersic"),
        ({}, {"n_sersic": 0.0}, "n_sersic"),
        ({}, {"amp": math.nan}, "amp"),
        ({}, {"e2": 1.0}, r"e1, e2"),
        ({}, {"center_x": math.nan}, "center_x"),
    ],
)
def test_bad_parameters_are_named(lens_changes, source_changes, match):
    lens = GOOD_LENS | {k: np.array([v]) for k, v in lens_changes.items()}
    source = GOOD_SOURCE | {k: np.array([[v]]) for k, v in source_changes.items()}
    with pytest.raises(ValueError, match=match):
        lensed_images(lens, source, grid=Grid(11, 0.2, 1), psf=None)


def test_missing_parameters_and_bad_shapes_are_reported():
    grid = Grid(11, 0.2, 1)
    with pytest.raises(ValueError, match="gamma1"):
        lensed_images(
            {k: v for k, v in GOOD_LENS.items() if k != "gamma1"}, GOOD_SOURCE, grid=grid, psf=None
        )
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        lensed_images(GOOD_LENS, {k: v[0] for k, v in GOOD_SOURCE.items()}, grid=grid, psf=None)
    with pytest.raises(ValueError, match="perturbation"):
        lensed_images(
            GOOD_LENS,
            GOOD_SOURCE,
            grid=grid,
            psf=None,
            perturbation=(np.zeros((1, 5, 5)), np.zeros((1, 5, 5))),
        )
    with pytest.raises(ValueError, match="perturbation"):
        lensed_images(
            GOOD_LENS,
            GOOD_SOURCE,
            grid=grid,
            psf=None,
            perturbation=(np.full((1, 11, 11), np.nan), np.zeros((1, 11, 11))),
        )
