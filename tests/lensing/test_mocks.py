"""The mock-lens kernels: parameter draws, source flux, arc rendering and painting.

References: the priors' definitions (ranges, log-uniform laws), a numerical integral of
the Sersic profile, the magnification of a singular isothermal sphere
(``mu = 2 theta_E / beta`` for a source inside the Einstein radius) and flux conservation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from lensdask.config import MockLensConfig
from lensdask.lensing.image import Grid
from lensdask.lensing.mocks import (
    PEAK_RADIUS,
    draw_lenses,
    galaxy_peak,
    paint_arcs,
    render_arcs,
    sersic_flux,
    source_components,
)
from lensdask.lensing.profiles import ellipticity2phi_q, sersic_brightness
from lensdask.lensing.psf import moffat_psf

PIXEL_SCALE = 0.2
GRID = Grid(101, PIXEL_SCALE, 3)
PSF = moffat_psf(0.7, pixel_scale=PIXEL_SCALE)
LOG_UNIFORM = ("theta_E", "src_R", "grf_sigma", "arc_peak_ratio")


def within(values: np.ndarray, bounds: tuple[float, float], slack: float = 1e-12) -> bool:
    low, high = bounds
    return bool(np.all((values >= low - slack) & (values <= high + slack)))


def check_draw(p: dict[str, np.ndarray], n: int, c: MockLensConfig) -> None:
    """Every drawn parameter of ``n`` systems within the priors of ``c``."""
    assert all(values.shape == (n,) for values in p.values())
    assert all(np.isfinite(values).all() for values in p.values())
    assert within(p["theta_E"], c.theta_E)
    assert within(ellipticity2phi_q(p["e1"], p["e2"])[1], c.lens_q, 1e-9)
    assert within(np.hypot(p["gamma1"], p["gamma2"]), c.shear)
    offset = np.hypot(p["src_x"] - p["center_x"], p["src_y"] - p["center_y"]) / p["theta_E"]
    assert within(offset, c.source_offset, 1e-9)
    assert within(p["src_R"], c.source_R)
    assert within(p["src_n"], c.source_n)
    assert within(ellipticity2phi_q(p["src_e1"], p["src_e2"])[1], c.source_q, 1e-9)
    amps = np.stack([p[f"clump{k}_amp"] for k in range(c.clumps[1])] or [np.zeros((n, 0))], -1)
    amps = amps.reshape(n, c.clumps[1])
    count = (amps != 0).sum(axis=1)
    assert within(count, c.clumps)
    # the clumps that exist come first; the others have amplitude 0
    assert ((amps != 0) == (np.arange(amps.shape[1]) < count[:, None])).all()
    assert within(amps[amps != 0], c.clump_contrast)
    for k in range(c.clumps[1]):
        assert within(p[f"clump{k}_R"], c.clump_R)
    assert within(p["grf_sigma"], c.grf_sigma)
    assert within(p["grf_slope"], c.grf_slope)
    assert within(p["arc_peak_ratio"], c.arc_peak_ratio)


# --- draw_lenses -----------------------------------------------------------------------------


def test_draws_follow_the_default_priors():
    c, n = MockLensConfig(), 20_000
    p = draw_lenses(n, np.random.default_rng(1), config=c)
    check_draw(p, n, c)
    for name in LOG_UNIFORM:  # uniform in log: KS test and median of the log at the midpoint
        low, high = np.log(getattr(c, name if name != "src_R" else "source_R"))
        logs = np.log(p[name])
        assert stats.kstest(logs, stats.uniform(low, high - low).cdf).pvalue > 1e-3, name
        assert abs(np.median(logs) - (low + high) / 2) < 0.02 * (high - low), name
    for name, bounds in (("src_n", c.source_n), ("grf_slope", c.grf_slope)):
        uniform = stats.uniform(bounds[0], bounds[1] - bounds[0])
        assert stats.kstest(p[name], uniform.cdf).pvalue > 1e-3, name
    # theta_E uniform in log, not in value: its median is the geometric mean, not 3"
    assert abs(np.median(p["theta_E"]) - math.sqrt(5.0)) < 0.05
    # the mass centre scatters by lens_offset per axis about the light centre
    for axis in ("center_x", "center_y"):
        assert abs(p[axis].std() / c.lens_offset - 1) < 0.03
        assert abs(p[axis].mean()) < 5 * c.lens_offset / math.sqrt(n)
    # the source offset is uniform in [lo, hi] theta_E, its direction uniform
    offset = np.hypot(p["src_x"] - p["center_x"], p["src_y"] - p["center_y"]) / p["theta_E"]
    lo, hi = c.source_offset
    assert stats.kstest(offset, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    angle = np.arctan2(p["src_y"] - p["center_y"], p["src_x"] - p["center_x"])
    assert stats.kstest(angle, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 1e-3
    # clumps scatter about the source centre by about its half-light radius
    dx = (p["clump0_x"] - p["src_x"]) / p["src_R"]
    assert abs(dx.std() - 1) < 0.03
    # the number of clumps is uniform on the integers of the range
    count = sum((p[f"clump{k}_amp"] > 0).astype(int) for k in range(c.clumps[1]))
    frequencies = np.bincount(count, minlength=c.clumps[1] + 1) / n
    np.testing.assert_allclose(frequencies, 1 / (c.clumps[1] - c.clumps[0] + 1), atol=0.015)


def bounds(low: float, high: float, *, positive: bool = False):
    """A strategy of [a, b] ranges with low <= a <= b <= high."""
    value = st.floats(low, high, allow_nan=False)
    if positive:
        value = value.filter(lambda v: v > 0)
    return st.tuples(value, value).map(sorted).map(tuple)


@st.composite
def priors(draw) -> MockLensConfig:
    grf = draw(st.one_of(st.just((0.0, 0.0)), bounds(1e-4, 1.0, positive=True)))
    return MockLensConfig(
        theta_E=draw(bounds(1e-3, 30.0)),
        lens_q=draw(bounds(1e-3, 1.0)),
        lens_offset=draw(st.floats(0, 0.99)),
        shear=draw(bounds(0.0, 0.5)),
        source_offset=draw(bounds(0.0, 3.0)),
        source_R=draw(bounds(1e-3, 10.0)),
        source_n=draw(bounds(0.2, 8.0)),
        source_q=draw(bounds(1e-3, 1.0)),
        clumps=tuple(sorted(draw(st.tuples(st.integers(0, 6), st.integers(0, 6))))),
        clump_R=draw(bounds(1e-3, 10.0)),
        clump_contrast=draw(bounds(1e-3, 100.0)),
        grf_sigma=grf,
        grf_slope=draw(bounds(1e-3, 20.0)),
        arc_peak_ratio=draw(bounds(1e-4, 100.0)),
    )


@settings(max_examples=100, deadline=None)
@given(config=priors(), n=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_draws_stay_within_any_priors(config, n, seed):
    p = draw_lenses(n, np.random.default_rng(seed), config=config)
    expected = {"theta_E", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2"}
    expected |= {"src_x", "src_y", "src_R", "src_n", "src_e1", "src_e2"}
    expected |= {f"clump{k}_{x}" for k in range(config.clumps[1]) for x in ("amp", "R", "x", "y")}
    expected |= {"grf_sigma", "grf_slope", "arc_peak_ratio"}
    assert set(p) == expected
    check_draw(p, n, config)
    again = draw_lenses(n, np.random.default_rng(seed), config=config)
    for name, values in p.items():
        np.testing.assert_array_equal(again[name], values, err_msg=name)


def test_same_seed_same_draw_other_seed_other_draw():
    c = MockLensConfig()
    one, same = (draw_lenses(50, np.random.default_rng(7), config=c) for _ in range(2))
    other = draw_lenses(50, np.random.default_rng(8), config=c)
    assert one.keys() == same.keys() == other.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], same[name])
        if name.endswith("_amp"):
            continue  # may be 0 in both draws
        assert not np.array_equal(one[name], other[name]), name


def test_grf_off_gives_zero_sigma():
    c = MockLensConfig(grf_sigma=(0.0, 0.0))
    p = draw_lenses(20, np.random.default_rng(0), config=c)
    assert (p["grf_sigma"] == 0).all()


# --- source flux -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_sersic", "R_sersic", "e1", "e2"),
    [(1.0, 0.3, 0.0, 0.0), (0.5, 0.5, 0.2, -0.1), (2.0, 0.2, -0.15, 0.25), (1.5, 0.4, 0.3, 0.0)],
)
def test_sersic_flux_is_the_integral_of_the_profile(n_sersic, R_sersic, e1, e2):
    amp = 2.5
    half, step = 25 * R_sersic, R_sersic / 25
    axis = np.arange(-half + step / 2, half, step)
    x, y = np.meshgrid(axis, axis)
    brightness = sersic_brightness(
        x, y, amp=amp, R_sersic=R_sersic, n_sersic=n_sersic, e1=e1, e2=e2
    )
    numerical = brightness.sum() * step**2
    source = {
        "amp": np.array([[amp]]),
        "R_sersic": np.array([[R_sersic]]),
        "n_sersic": np.array([[n_sersic]]),
        "e1": np.array([[e1]]),
        "e2": np.array([[e2]]),
        "center_x": np.zeros((1, 1)),
        "center_y": np.zeros((1, 1)),
    }
    flux = sersic_flux(source)
    assert flux.shape == (1,)
    assert flux[0] == pytest.approx(numerical, rel=2e-3)


def test_sersic_flux_sums_the_components():
    p = draw_lenses(6, np.random.default_rng(2), config=MockLensConfig(clumps=(2, 3)))
    source = source_components(p)
    assert source["amp"].shape == (6, 4)
    np.testing.assert_array_equal(source["amp"][:, 0], 1.0)
    single = [sersic_flux({k: v[:, c : c + 1] for k, v in source.items()}) for c in range(4)]
    np.testing.assert_allclose(sersic_flux(source), np.sum(single, axis=0), rtol=1e-12)
    assert (single[3][p["clump2_amp"] == 0] == 0).all()


# --- render_arcs -------------------------------------------------------------------------------


def systems(**columns: list[float]) -> dict[str, np.ndarray]:
    """Hand-made systems: a round SIS, no shear, no clumps, no GRF unless given."""
    n = len(next(iter(columns.values())))
    base = {"theta_E": 1.0, "e1": 0.0, "e2": 0.0, "center_x": 0.0, "center_y": 0.0}
    base |= {"gamma1": 0.0, "gamma2": 0.0, "src_x": 0.0, "src_y": 0.0, "src_R": 0.2}
    base |= {"src_n": 1.0, "src_e1": 0.0, "src_e2": 0.0, "grf_sigma": 0.0, "grf_slope": 4.0}
    base |= {"arc_peak_ratio": 0.1}
    return {
        name: np.asarray(columns.get(name, [value] * n), dtype=np.float64)
        for name, value in base.items()
    }


def test_no_lensing_far_from_the_lens():
    """theta_E = 0.001" and the source 5" away: magnification 1, the source's own image."""
    p = systems(theta_E=[1e-3, 1e-3], src_x=[4.0, -3.0], src_y=[3.0, 1.0], src_R=[0.4, 0.6])
    arcs, magnification = render_arcs(p, np.random.default_rng(0), grid=GRID, psf=None)
    assert arcs.shape == (2, GRID.size, GRID.size)
    np.testing.assert_allclose(magnification, 1.0, atol=5e-3)
    # the image is the source, where the source is: its centroid
    yy, xx = (np.indices(arcs.shape[1:]) - (GRID.size - 1) / 2) * PIXEL_SCALE
    for image, x, y in zip(arcs, p["src_x"], p["src_y"], strict=True):
        total = image.sum()
        assert (image * xx).sum() / total == pytest.approx(x, abs=0.01)
        assert (image * yy).sum() / total == pytest.approx(y, abs=0.01)


@pytest.mark.parametrize("beta_over_theta", [0.3, 0.5])
def test_sis_magnification_is_two_theta_e_over_beta(beta_over_theta):
    """A small source inside the Einstein radius of an SIS: mu = 2 theta_E / beta."""
    theta_E = 2.0
    beta = beta_over_theta * theta_E
    p = systems(theta_E=[theta_E], src_x=[beta], src_R=[0.08])
    _, magnification = render_arcs(p, np.random.default_rng(0), grid=Grid(101, 0.2, 5), psf=None)
    assert magnification[0] == pytest.approx(2 / beta_over_theta, rel=0.03)


def test_source_on_the_axis_makes_a_magnified_ring_at_the_einstein_radius():
    theta_E = 1.5
    p = systems(theta_E=[theta_E], src_R=[0.15])
    arcs, magnification = render_arcs(p, np.random.default_rng(0), grid=GRID, psf=None)
    assert magnification[0] > 5
    yy, xx = (np.indices(arcs.shape[1:]) - (GRID.size - 1) / 2) * PIXEL_SCALE
    radius = np.hypot(xx, yy)
    ring = arcs[0] > 0.5 * arcs[0].max()
    assert abs(np.median(radius[ring]) - theta_E) < PIXEL_SCALE


def test_psf_keeps_the_flux_of_arcs_inside_the_stamp():
    c = MockLensConfig(theta_E=(1.0, 2.0))
    p = draw_lenses(4, np.random.default_rng(5), config=c)
    plain, mu_plain = render_arcs(p, np.random.default_rng(9), grid=GRID, psf=None)
    blurred, mu_blurred = render_arcs(p, np.random.default_rng(9), grid=GRID, psf=PSF)
    assert blurred.shape == plain.shape == (4, GRID.size, GRID.size)
    np.testing.assert_array_equal(mu_plain, mu_blurred)
    np.testing.assert_allclose(blurred.sum(axis=(1, 2)), plain.sum(axis=(1, 2)), rtol=1e-6)
    assert (blurred.max(axis=(1, 2)) < plain.max(axis=(1, 2))).all()  # blurred, so lower peaks
    assert (mu_plain > 1).all()
    # the GRF realisation comes from the rng: another stream, other arcs
    other, _ = render_arcs(p, np.random.default_rng(10), grid=GRID, psf=None)
    assert not np.array_equal(other, plain)


# --- painting --------------------------------------------------------------------------------


def galaxies(n: int, seed: int = 0, size: int = 101) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    peak = rng.uniform(50, 500, n)[:, None, None]
    width = rng.uniform(1, 3, n)[:, None, None]
    image = peak * np.exp(-(xx**2 + yy**2) / (2 * width**2)) + rng.standard_normal((n, size, size))
    return image.astype(np.float32)


def test_galaxy_peak_is_the_central_maximum():
    cutouts = galaxies(3)
    c = cutouts.shape[-1] // 2
    cutouts[0, 5, 5] = 1e5  # a bright star far from the centre does not count
    cutouts[1, c, c] = np.nan  # NaN ignored
    cutouts[2, c + PEAK_RADIUS, c - PEAK_RADIUS] = 1e4  # the corner of the core counts
    cutouts[2, c + PEAK_RADIUS + 1, c] = 2e4  # just outside does not
    core = cutouts[:, c - PEAK_RADIUS : c + PEAK_RADIUS + 1, c - PEAK_RADIUS : c + PEAK_RADIUS + 1]
    expected = [core[0].max(), np.nanmax(core[1]), 1e4]
    np.testing.assert_array_equal(galaxy_peak(cutouts), np.array(expected, dtype=np.float32))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), ratio=st.floats(0.01, 1.0))
def test_arc_peak_is_the_ratio_times_the_galaxy_peak(seed, ratio):
    c = MockLensConfig(grf_sigma=(0.0, 0.0))
    p = draw_lenses(3, np.random.default_rng(seed), config=c)
    arcs, _ = render_arcs(p, np.random.default_rng(seed), grid=Grid(101, 0.2, 1), psf=PSF)
    raw = galaxies(3, seed)
    ratios = np.full(3, ratio)
    painted, scale = paint_arcs(raw, arcs, ratios)
    assert painted.dtype == np.float32 and painted.shape == raw.shape
    added = painted.astype(np.float64) - raw
    tolerance = 4 * np.spacing(np.abs(painted).max(axis=(1, 2)))
    error = np.abs(added.max(axis=(1, 2)) - ratio * galaxy_peak(raw))
    assert (error <= tolerance).all(), (error, tolerance)
    np.testing.assert_allclose(scale * arcs.max(axis=(1, 2)), ratio * galaxy_peak(raw))
    np.testing.assert_array_equal(painted, (raw + arcs * scale[:, None, None]).astype(np.float32))


def test_an_empty_arc_paints_nothing():
    raw = galaxies(2)
    arcs = np.zeros(raw.shape)
    arcs[1, 40, 40] = 2.0
    painted, scale = paint_arcs(raw, arcs, np.array([0.1, 0.1]))
    np.testing.assert_array_equal(painted[0], raw[0])
    assert scale[0] == 0 and scale[1] == pytest.approx(0.1 * galaxy_peak(raw)[1] / 2.0)


@pytest.mark.parametrize("damage", ["negative", "nan"])
def test_a_cutout_without_a_positive_peak_is_refused(damage):
    raw = galaxies(3)
    c = raw.shape[-1] // 2
    if damage == "negative":
        raw[1] = -np.abs(raw[1]) - 1
    else:
        raw[1, c - PEAK_RADIUS : c + PEAK_RADIUS + 1, c - PEAK_RADIUS : c + PEAK_RADIUS + 1] = (
            np.nan
        )
    with pytest.raises(ValueError, match="cutout 1 has no positive galaxy peak"):
        paint_arcs(raw, np.ones(raw.shape), np.full(3, 0.1))
