"""SIE, shear and Sersic kernels against lenstronomy's SIE, SHEAR and SERSIC_ELLIPSE.

Agreement criterion, per element: ``|ours - lenstronomy| <= 1e-6 |lenstronomy| + atol``,
where ``atol`` is 1e-10 theta_E for deflections and 1e-12 of the profile's central surface
brightness for Sersic profiles: a relative 1e-6 wherever the value is not ~0 (a deflection
component that vanishes on an axis, the far tail of a profile), and an absolute floor far
below anything an image shows where it is.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensdask.lensing.profiles import (
    ellipticity2phi_q,
    phi_q2ellipticity,
    sersic_b,
    sersic_brightness,
    shear_deflection,
    sie_deflection,
)

pytest.importorskip("lenstronomy")
from lenstronomy.LensModel.Profiles.shear import Shear
from lenstronomy.LensModel.Profiles.sie import SIE
from lenstronomy.LightModel.Profiles.sersic import SersicElliptic
from lenstronomy.Util import param_util

RTOL = 1e-6
EXAMPLES = settings(max_examples=60, deadline=None)


def ellipticity(max_modulus: float = 0.6):
    """(e1, e2) with |e| <= max_modulus at any angle."""
    return st.tuples(st.floats(0.0, max_modulus), st.floats(0.0, math.pi, exclude_max=True)).map(
        lambda mp: (mp[0] * math.cos(2 * mp[1]), mp[0] * math.sin(2 * mp[1]))
    )


centres = st.floats(-1.0, 1.0)


def positions(cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """A 9 x 9 grid over +-5 arcsec plus points within 1e-6..1e-2 arcsec of (cx, cy)."""
    axis = np.linspace(-5.0, 5.0, 9)
    gx, gy = np.meshgrid(axis, axis)
    near = np.array([1e-6, -1e-5, 1e-4, -1e-3, 1e-2])
    x = np.concatenate([gx.ravel(), cx + near, cx + near[::-1], np.full(5, cx)])
    y = np.concatenate([gy.ravel(), cy + near[::-1], cy - near, cy + near])
    return x, y


def assert_close(ours: np.ndarray, ref: np.ndarray, atol: float) -> None:
    bad = np.abs(ours - ref) > RTOL * np.abs(ref) + atol
    assert not bad.any(), f"{bad.sum()} elements differ: ours {ours[bad]}, lenstronomy {ref[bad]}"


@EXAMPLES
@given(
    theta_E=st.floats(0.5, 6.0),
    e=ellipticity(),
    cx=centres,
    cy=centres,
)
def test_sie_matches_lenstronomy(theta_E, e, cx, cy):
    x, y = positions(cx, cy)
    ours = sie_deflection(x, y, theta_E=theta_E, e1=e[0], e2=e[1], center_x=cx, center_y=cy)
    ref = SIE().derivatives(x, y, theta_E, e[0], e[1], center_x=cx, center_y=cy)
    for a, b in zip(ours, ref, strict=True):
        assert_close(a, b, atol=1e-10 * theta_E)


def test_sie_round_and_on_its_centre():
    """q = 1 (e = 0) is the round limit lenstronomy also uses; the centre deflects by 0."""
    x, y = positions(0.0, 0.0)
    ours = sie_deflection(x, y, theta_E=1.5, e1=0.0, e2=0.0)
    ref = SIE().derivatives(x, y, 1.5, 0.0, 0.0)
    for a, b in zip(ours, ref, strict=True):
        assert_close(a, b, atol=1.5e-10)
    far = sie_deflection(np.array([3.0]), np.array([4.0]), theta_E=1.5, e1=0.0, e2=0.0)
    np.testing.assert_allclose(np.hypot(*far), 1.5, rtol=1e-8)  # |alpha| = theta_E (SIS)
    centre = sie_deflection(np.array([0.0]), np.array([0.0]), theta_E=1.5, e1=0.3, e2=0.1)
    assert np.all(np.isfinite(centre)) and np.all(np.abs(centre) < 1e-12)


def test_sie_broadcasts_a_batch():
    """Parameters of shape (B, 1, 1) against an (H, W) grid give (B, H, W), system by system."""
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-3, 3, 7), np.linspace(-2, 2, 5))
    p = {
        "theta_E": rng.uniform(1, 3, 4),
        "e1": rng.uniform(-0.3, 0.3, 4),
        "e2": rng.uniform(-0.3, 0.3, 4),
        "center_x": rng.normal(0, 0.1, 4),
        "center_y": rng.normal(0, 0.1, 4),
    }
    batch = sie_deflection(x, y, **{k: v[:, None, None] for k, v in p.items()})
    assert batch[0].shape == (4, 5, 7)
    for i in range(4):
        one = sie_deflection(x, y, **{k: v[i] for k, v in p.items()})
        np.testing.assert_array_equal(batch[0][i], one[0])
        np.testing.assert_array_equal(batch[1][i], one[1])


@EXAMPLES
@given(gamma1=st.floats(-0.1, 0.1), gamma2=st.floats(-0.1, 0.1))
def test_shear_matches_lenstronomy(gamma1, gamma2):
    x, y = positions(0.3, -0.2)
    ours = shear_deflection(x, y, gamma1=gamma1, gamma2=gamma2)
    ref = Shear().derivatives(x, y, gamma1, gamma2)
    for a, b in zip(ours, ref, strict=True):
        assert_close(a, b, atol=1e-15)


@EXAMPLES
@given(
    amp=st.floats(0.1, 100.0),
    R_sersic=st.floats(0.02, 1.0),
    n_sersic=st.floats(0.5, 4.0),
    e=ellipticity(),
    cx=centres,
    cy=centres,
)
def test_sersic_matches_lenstronomy(amp, R_sersic, n_sersic, e, cx, cy):
    x, y = positions(cx, cy)
    kwargs = dict(amp=amp, R_sersic=R_sersic, n_sersic=n_sersic, e1=e[0], e2=e[1])
    ours = sersic_brightness(x, y, **kwargs, center_x=cx, center_y=cy)
    ref = SersicElliptic().function(x, y, **kwargs, center_x=cx, center_y=cy)
    central = amp * math.exp(float(sersic_b(n_sersic)))
    assert_close(ours, ref, atol=1e-12 * central)


def test_sersic_amp_is_the_brightness_at_R_sersic():
    for n in (0.5, 1.0, 4.0):
        value = sersic_brightness(
            np.array([0.7]), np.array([0.0]), amp=3.0, R_sersic=0.7, n_sersic=n, e1=0.0, e2=0.0
        )
        np.testing.assert_allclose(value, 3.0, rtol=1e-12)


@given(phi=st.floats(-math.pi, math.pi), q=st.floats(0.01, 1.0))
@settings(max_examples=60, deadline=None)
def test_phi_q2ellipticity_matches_lenstronomy(phi, q):
    ours = phi_q2ellipticity(phi, q)
    ref = param_util.phi_q2_ellipticity(phi, q)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)
    _, back_q = ellipticity2phi_q(*ours)
    np.testing.assert_allclose(back_q, q, rtol=1e-9)


@pytest.mark.parametrize("q", [0.0, -0.1, 1.0 + 1e-9, 2.0, math.nan])
def test_phi_q2ellipticity_rejects_q_outside_0_1(q):
    with pytest.raises(ValueError, match="q"):
        phi_q2ellipticity(0.3, q)


SIE_GOOD = dict(theta_E=1.0, e1=0.1, e2=0.0, center_x=0.0, center_y=0.0)
SERSIC_GOOD = dict(amp=1.0, R_sersic=0.3, n_sersic=1.0, e1=0.1, e2=0.0, center_x=0.0, center_y=0.0)
ONE = np.array([1.0])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"theta_E": 0.0}, "theta_E"),
        ({"theta_E": -1.0}, "theta_E"),
        ({"e1": 0.8, "e2": 0.6}, r"e1, e2: \|e\| must be < 1"),
        ({"e1": 1.0}, r"e1, e2: \|e\| must be < 1"),
        *[({name: math.nan}, name) for name in SIE_GOOD],
        ({"center_x": math.inf}, "center_x"),
    ],
)
def test_sie_rejects_bad_parameters(changes, match):
    with pytest.raises(ValueError, match=match):
        sie_deflection(ONE, ONE, **(SIE_GOOD | changes))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"R_sersic": 0.0}, "R_sersic"),
        ({"n_sersic": -1.0}, "n_sersic"),
        ({"e1": -0.9, "e2": 0.5}, r"e1, e2: \|e\| must be < 1"),
        *[({name: math.nan}, name) for name in SERSIC_GOOD],
    ],
)
def test_sersic_rejects_bad_parameters(changes, match):
    with pytest.raises(ValueError, match=match):
        sersic_brightness(ONE, ONE, **(SERSIC_GOOD | changes))


@pytest.mark.parametrize("name", ["gamma1", "gamma2"])
def test_shear_rejects_nan(name):
    with pytest.raises(ValueError, match=name):
        shear_deflection(ONE, ONE, **({"gamma1": 0.0, "gamma2": 0.0} | {name: math.nan}))


def test_bad_value_inside_a_batch_is_named():
    theta = np.array([1.0, 2.0, math.nan])[:, None, None]
    with pytest.raises(ValueError, match="theta_E"):
        sie_deflection(ONE, ONE, **(SIE_GOOD | {"theta_E": theta}))
