"""Arcs painted with the PSF of their host's tile, and in several bands with colours.

The references are astropy's: a Moffat2D integrated over pixels (``discretize_model``) and
``convolve_fft``; the arcs' widths are compared by their second moments.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.convolution import convolve_fft, discretize_model
from astropy.modeling.models import Moffat2D

from lensdask.config import MockLensConfig, SimulateConfig
from lensdask.lensing.image import Grid
from lensdask.lensing.mocks import draw_lenses, render_arcs
from lensdask.lensing.psf import moffat_psf
from lensdask.lensing.simulate import host_convolved, make_examples, paint_bands
from lensdask.normalise import normalise_bands

PIXEL_SCALE = 0.2
SIZE = 41
CONFIG = SimulateConfig(seed=0)
GRID = Grid(SIZE, PIXEL_SCALE, CONFIG.supersample)


def unconvolved_arc() -> np.ndarray:
    """One lensed source without PSF, shape (size, size)."""
    rng = np.random.default_rng(4)
    drawn = draw_lenses(1, rng, config=CONFIG.lenses)
    drawn["theta_E"][:] = 1.5
    drawn["grf_sigma"][:] = 0.0
    arcs, _ = render_arcs(drawn, rng, grid=GRID, psf=None)
    return arcs[0]


def astropy_convolved(arc: np.ndarray, fwhm: float) -> np.ndarray:
    """``arc`` convolved with astropy's pixel-integrated Moffat of ``fwhm`` (arcsec)."""
    beta = CONFIG.psf_beta
    gamma = fwhm / PIXEL_SCALE / (2 * np.sqrt(2 ** (1 / beta) - 1))
    half = 4 * int(np.ceil(fwhm / PIXEL_SCALE))
    model = Moffat2D(amplitude=1, x_0=0, y_0=0, gamma=gamma, alpha=beta)
    kernel = discretize_model(model, (-half, half + 1), (-half, half + 1), mode="oversample")
    return convolve_fft(arc, kernel / kernel.sum(), normalize_kernel=False, boundary="fill")


def second_moment(image: np.ndarray) -> float:
    """Flux-weighted mean squared distance from the stamp's centre, pixels^2."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    return float(np.sum(image * (xx**2 + yy**2)) / np.sum(image))


def test_each_arc_gets_its_hosts_psf():
    arc = unconvolved_arc()
    fallback = moffat_psf(0.7, pixel_scale=PIXEL_SCALE)
    fwhm = np.array([0.5, 0.9, np.nan, 0.5])
    arcs = host_convolved(
        np.repeat(arc[None], 4, axis=0), fwhm, fallback=fallback, grid=GRID, config=CONFIG
    )
    narrow, wide = second_moment(arcs[0]), second_moment(arcs[1])
    assert wide > narrow * 1.02  # the arc on the 0.9" tile is wider than on the 0.5" one
    for k, value in ((0, 0.5), (1, 0.9), (2, 0.7)):
        reference = astropy_convolved(arc, value)
        assert second_moment(arcs[k]) == pytest.approx(second_moment(reference), rel=2e-3)
        np.testing.assert_allclose(arcs[k], reference, atol=2e-3 * reference.max())
    np.testing.assert_array_equal(arcs[0], arcs[3])


def test_no_host_psf_is_the_configured_psf_bit_for_bit():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    raw = (
        100 * np.exp(-(xx**2 + yy**2) / 8.0)[None] + rng.standard_normal((6, SIZE, SIZE))
    ).astype(np.float32)
    labels = np.array([1, 0, 1, 1, 0, 1])
    psf = moffat_psf(CONFIG.psf_fwhm, pixel_scale=PIXEL_SCALE, beta=CONFIG.psf_beta)

    def make(host_fwhm):
        return make_examples(
            raw,
            labels,
            np.random.default_rng(9),
            config=CONFIG,
            pixel_scale=PIXEL_SCALE,
            psf=psf,
            host_fwhm=host_fwhm,
        )

    plain, params = make(None)
    unknown, _ = make(np.full((6, 1), np.nan))
    np.testing.assert_array_equal(unknown, plain)
    # every host on a tile of the configured FWHM: the same images up to float rounding
    same, same_params = make(np.full((6, 1), CONFIG.psf_fwhm))
    np.testing.assert_allclose(same, plain, atol=0.01)
    np.testing.assert_allclose(same_params["arc_scale"], params["arc_scale"], rtol=1e-6)
    wider, _ = make(np.full((6, 1), 1.2))
    assert not np.allclose(wider[labels == 1], plain[labels == 1], atol=1.0)
    np.testing.assert_array_equal(wider[labels == 0], plain[labels == 0])


def test_three_bands_follow_the_source_colours():
    # Einstein radii well inside the 8" stamp: little light spread past its edge
    config = SimulateConfig(bands=("g", "r", "i"), lenses=MockLensConfig(theta_E=(1.0, 1.5)))
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    galaxy = 100 * np.exp(-(xx**2 + yy**2) / 8.0)
    raw = np.stack([galaxy * f for f in (0.5, 1.0, 1.4)], axis=-1)[None].repeat(4, axis=0)
    raw = raw.astype(np.float32)
    positive = np.arange(4)
    drawn = draw_lenses(4, rng, config=config.lenses)
    psf = moffat_psf(0.7, pixel_scale=PIXEL_SCALE)
    fwhm = np.array([[0.9, 0.7, 0.6]] * 4)
    images, _, _, colours = paint_bands(
        raw, positive, drawn, rng, grid=GRID, psf=psf, fwhm=fwhm, config=config
    )
    assert images.shape == (4, SIZE, SIZE, 3)
    arc = images.astype(np.float64) - raw
    flux = arc.sum(axis=(1, 2))
    # flux in g over r is 10^(-0.4 (g - r)), in i over r 10^(0.4 (r - i)), up to the light
    # the PSF spreads past the stamp's edge
    np.testing.assert_allclose(
        flux[:, 0] / flux[:, 1], 10 ** (-0.4 * colours["src_g_r"]), rtol=0.02
    )
    np.testing.assert_allclose(flux[:, 2] / flux[:, 1], 10 ** (0.4 * colours["src_r_i"]), rtol=0.02)
    assert np.all((colours["src_g_r"] >= 0) & (colours["src_g_r"] <= 0.6))
    # the arc in g (0.9") is wider than in i (0.6")
    for k in range(4):
        assert second_moment(arc[k, ..., 0]) > second_moment(arc[k, ..., 2])
    # make_examples records the colours and normalises as configured
    labels = np.array([1, 0, 1, 0])
    for mode in ("per-band", "joint"):
        chosen = SimulateConfig(bands=("g", "r", "i"), normalise=mode, seed=0)
        out, params = make_examples(
            raw, labels, np.random.default_rng(5), config=chosen, pixel_scale=PIXEL_SCALE, psf=psf
        )
        assert out.shape == raw.shape and out.dtype == np.float32
        assert {"src_g_r", "src_r_i"} <= set(params)
        assert np.isnan(params["src_g_r"][labels == 0]).all()
        np.testing.assert_array_equal(
            out[labels == 0], normalise_bands(raw[labels == 0], mode=mode)
        )
        top = out.max(axis=(1, 2))
        if mode == "per-band":
            np.testing.assert_allclose(top, 255, rtol=1e-6)
        else:  # one scale per stamp: the bands keep their ratios
            np.testing.assert_allclose(top.max(axis=1), 255, rtol=1e-6)
            assert np.all(top[labels == 0, 0] < top[labels == 0, 2])
