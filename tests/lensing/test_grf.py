"""Gaussian-random-field potential perturbations: normalisation, gradient, spectrum, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensdask.lensing.grf import grf_perturbation


def draw(shape=(64, 64), *, spacing=0.2, sigma=(1e-2,), slope=(4.0,), seed=0):
    return grf_perturbation(
        shape,
        spacing=spacing,
        sigma=np.asarray(sigma, dtype=float),
        slope=np.asarray(slope, dtype=float),
        rng=np.random.default_rng(seed),
    )


@given(
    shape=st.tuples(st.integers(8, 80), st.integers(8, 80)),
    sigma=st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=4),
    slope=st.floats(0.5, 8.0),
)
@settings(max_examples=25, deadline=None)
def test_rms_of_each_realisation_is_sigma(shape, sigma, slope):
    psi, ax, ay = draw(shape, sigma=sigma, slope=[slope] * len(sigma))
    assert psi.shape == ax.shape == ay.shape == (len(sigma), *shape)
    assert psi.dtype == ax.dtype == ay.dtype == np.float64
    np.testing.assert_allclose(np.sqrt(np.mean(psi**2, axis=(1, 2))), sigma, rtol=1e-12)


def test_deflection_is_the_gradient_of_the_potential():
    """Central differences of psi converge to alpha as h^2 (slope 10: a smooth field)."""
    spacing = 0.1
    psi, ax, ay = draw((128, 128), spacing=spacing, slope=(10.0,))
    errors = []
    inner = slice(8, -8)
    for step in (1, 2, 4):
        h = step * spacing
        dx = (np.roll(psi, -step, axis=2) - np.roll(psi, step, axis=2)) / (2 * h)
        dy = (np.roll(psi, -step, axis=1) - np.roll(psi, step, axis=1)) / (2 * h)
        errors.append(
            max(
                np.abs(dx - ax)[:, inner, inner].max(),
                np.abs(dy - ay)[:, inner, inner].max(),
            )
        )
    scale = max(np.abs(ax).max(), np.abs(ay).max())
    assert errors[0] < 1e-3 * scale
    for coarse, fine in zip(errors[1:], errors[:-1], strict=True):
        assert 3.0 < coarse / fine < 5.0  # second-order convergence


def test_zero_sigma_gives_zero_fields():
    psi, ax, ay = draw(sigma=(0.0, 1e-2, 0.0), slope=(4.0, 4.0, 6.0))
    for field in (psi, ax, ay):
        assert not field[0].any() and not field[2].any()
        assert field[1].any()


def test_same_seed_same_field_other_seed_other_field():
    a = draw(seed=7)
    b = draw(seed=7)
    c = draw(seed=8)
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x, y)
        assert not np.allclose(x, z)


def test_realisation_does_not_depend_on_the_batch_size():
    """The noise is drawn system after system: realisation k of a batch is the same whatever
    follows it (a prefix of a larger batch with the same generator state)."""
    small = draw(sigma=[1e-2] * 2, slope=[4.0, 5.0], seed=3)
    large = draw(sigma=[1e-2] * 5, slope=[4.0, 5.0, 6.0, 4.5, 3.0], seed=3)
    for s, g in zip(small, large, strict=True):
        np.testing.assert_array_equal(s, g[:2])


@pytest.mark.parametrize("slope", [3.0, 5.0])
def test_power_spectrum_slope(slope):
    """The azimuthally averaged power of psi over many realisations falls as k^-slope."""
    n, spacing = 128, 0.1  # 128 is its own FFT box: the field is periodic, no crop
    psi, _, _ = draw((n, n), spacing=spacing, sigma=[1.0] * 48, slope=[slope] * 48, seed=11)
    power = (np.abs(np.fft.fft2(psi)) ** 2).mean(axis=0)
    kx, ky = np.meshgrid(np.fft.fftfreq(n, spacing), np.fft.fftfreq(n, spacing))
    k = np.hypot(kx, ky)
    edges = np.geomspace(1.5 / (n * spacing), 0.8 / (2 * spacing), 12)
    which = np.digitize(k, edges)
    k_mean = [k[which == i].mean() for i in range(1, edges.size)]
    p_mean = [power[which == i].mean() for i in range(1, edges.size)]
    fitted = -np.polyfit(np.log(k_mean), np.log(p_mean), 1)[0]
    assert abs(fitted - slope) < 0.1


def test_rectangular_grid_is_cropped_from_the_box():
    psi, *_ = draw((20, 50), sigma=(1e-2,))
    assert psi.shape == (1, 20, 50)
    np.testing.assert_allclose(np.sqrt(np.mean(psi**2)), 1e-2, rtol=1e-12)


@pytest.mark.parametrize(
    ("sigma", "slope", "match"),
    [
        (-1e-3, 4.0, "sigma"),
        (math.nan, 4.0, "sigma"),
        (math.inf, 4.0, "sigma"),
        (1e-3, 0.0, "slope"),
        (1e-3, -2.0, "slope"),
        (1e-3, math.nan, "slope"),
    ],
)
def test_bad_sigma_or_slope_is_named(sigma, slope, match):
    with pytest.raises(ValueError, match=match):
        draw(sigma=(1e-3, sigma), slope=(4.0, slope))


@pytest.mark.parametrize("slope", [0.5, 20.0])
def test_extreme_slopes_stay_finite(slope):
    """The mode amplitudes are scaled to at most 1 before the float32 transforms."""
    psi, ax, ay = draw((300, 300), spacing=0.01, slope=(slope,))
    assert all(np.all(np.isfinite(f)) for f in (psi, ax, ay))
    np.testing.assert_allclose(np.sqrt(np.mean(psi**2)), 1e-2, rtol=1e-12)
