"""Structured galaxies (spiral arms, rings, mergers) and the shared stamp machinery."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from lensdask.lensing.psf import moffat_psf
from lensdask.mock.render import add_profiles, render_sources, source_peaks
from lensdask.mock.structure import KINDS, add_structures, structure_profiles

SHAPE = (161, 161)
CENTRE = 80.0
DELTA_PSF = np.array([[1.0]])


@pytest.fixture(scope="module")
def kids_psf() -> np.ndarray:
    return moffat_psf(0.7)


def structure_image(kind: str, *, psf: np.ndarray, flux: float = 1000.0, **params) -> np.ndarray:
    """One galaxy's structure alone, centred on the image."""
    defaults = {"q": 1.0, "theta": 0.0, "radius": 15.0, "width": 2.0, "angle": 0.0, "pitch": 0.4}
    image = np.zeros(SHAPE, dtype=np.float32)
    add_structures(
        image,
        np.array([CENTRE]),
        np.array([CENTRE]),
        np.array([flux]),
        kind=np.array([kind]),
        psf=psf,
        **{name: np.array([value]) for name, value in (defaults | params).items()},
    )
    return image


def body_image(*, flux: float, r_eff: float, n_sersic: float, psf: np.ndarray, x=CENTRE, y=CENTRE):
    return render_sources(
        SHAPE,
        np.array([x]),
        np.array([y]),
        np.array([flux]),
        n_sersic=n_sersic,
        r_eff=r_eff,
        q=1.0,
        theta=0.0,
        point=np.array([False]),
        psf=psf,
    )


def radial_profile(image: np.ndarray, *, x: float = CENTRE, y: float = CENTRE) -> np.ndarray:
    """Mean of the image in rings of 1 pixel around (x, y)."""
    yy, xx = np.indices(image.shape)
    radius = np.hypot(xx - x, yy - y).astype(int)
    return np.bincount(radius.ravel(), image.ravel()) / np.bincount(radius.ravel())


@pytest.mark.parametrize("kind", KINDS)
def test_structure_flux_is_conserved(kind: str, kids_psf: np.ndarray) -> None:
    image = structure_image(kind, psf=kids_psf, flux=1234.0, radius=8.0, width=2.0)
    assert image.sum(dtype=np.float64) == pytest.approx(1234.0, rel=1e-4)
    assert image.min() > -1e-3 * image.max()  # FFT ringing only


@pytest.mark.parametrize("kind", KINDS)
def test_profiles_sum_to_one(kind: str) -> None:
    profiles = structure_profiles(
        kind,
        61,
        3,
        q=np.array([0.7, 1.0]),
        theta=np.array([0.3, 1.0]),
        radius=np.array([8.0, 5.0]),
        width=np.array([1.5, 2.5]),
        angle=np.array([0.5, 2.0]),
        pitch=np.array([0.3, -0.5]),
    )
    assert profiles.shape == (2, 61, 61) and profiles.dtype == np.float32
    np.testing.assert_allclose(profiles.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_ring_galaxy_has_a_secondary_maximum_at_the_ring(kids_psf: np.ndarray) -> None:
    """A red core plus a ring of radius 3 arcsec (15 px): the radial profile falls from the
    core, rises again and peaks at the ring radius."""
    image = body_image(flux=3000.0, r_eff=4.0, n_sersic=4.0, psf=kids_psf)
    image += structure_image("ring", psf=kids_psf, flux=2000.0, radius=15.0, width=1.5)
    profile = radial_profile(image)
    maxima = [
        r for r in range(1, 40) if profile[r] > profile[r - 1] and profile[r] > profile[r + 1]
    ]
    assert len(maxima) == 1
    assert maxima[0] == pytest.approx(15, abs=1)
    dip = profile[5:15].min()
    assert profile[maxima[0]] > 1.2 * dip


def test_inclined_ring_is_an_ellipse_of_the_disc_axis_ratio() -> None:
    image = structure_image("ring", psf=DELTA_PSF, radius=20.0, width=1.0, q=0.5, theta=0.0)
    centre = int(CENTRE)
    assert int(np.argmax(image[centre, centre:])) == pytest.approx(20, abs=1)  # major axis
    assert int(np.argmax(image[centre:, centre])) == pytest.approx(10, abs=1)  # minor axis


def test_merger_has_two_peaks_at_the_separation(kids_psf: np.ndarray) -> None:
    """Body at the centre and a companion 2 arcsec (10 px) away towards +y."""
    image = body_image(flux=2000.0, r_eff=3.0, n_sersic=1.0, psf=kids_psf)
    image += structure_image(
        "merger", psf=kids_psf, flux=1200.0, radius=10.0, width=2.0, angle=math.pi / 2
    )
    peaks = (image == ndimage.maximum_filter(image, size=5)) & (image > 0.05 * image.max())
    ys, xs = np.nonzero(peaks)
    assert len(xs) == 2
    positions = sorted(zip(ys.tolist(), xs.tolist(), strict=True))
    assert positions[0] == (80, 80)
    assert positions[1][1] == 80 and positions[1][0] == pytest.approx(90, abs=1)


def test_merger_tail_winds_away_from_the_companion() -> None:
    """The tail's light lies beyond the companion, on the side the pitch's sign says."""
    image = structure_image("merger", psf=DELTA_PSF, radius=12.0, width=1.5, pitch=0.5)
    yy, xx = np.indices(image.shape)
    r = np.hypot(xx - CENTRE, yy - CENTRE)
    phi = np.arctan2(yy - CENTRE, xx - CENTRE)
    far = r > 20  # beyond the companion (at 12 px, half-light 1.5 px)
    assert image[far].sum() > 0.1 * image.sum()
    # positive pitch: the tail turns from the companion's angle (0) towards +phi
    assert image[far & (phi > 0)].sum() > 10 * image[far & (phi < 0)].sum()
    mirrored = structure_image("merger", psf=DELTA_PSF, radius=12.0, width=1.5, pitch=-0.5)
    np.testing.assert_allclose(mirrored, image[::-1], atol=1e-6 * image.max())


def test_spiral_arms_are_two_logarithmic_spirals() -> None:
    """Along circles, the arms' light has a strong m = 2 mode whose phase turns with
    radius as ``2 ln(R) / tan(pitch)``, the signature of a logarithmic spiral."""
    pitch = 0.4
    image = structure_image("spiral", psf=DELTA_PSF, radius=25.0, pitch=pitch).astype(np.float64)
    yy, xx = np.indices(image.shape)
    r = np.hypot(xx - CENTRE, yy - CENTRE)
    phi = np.arctan2(yy - CENTRE, xx - CENTRE)
    phases = {}
    for radius in (15.0, 25.0):
        ring = np.abs(r - radius) < 0.5
        weights = image[ring]
        m2 = (weights * np.exp(-2j * phi[ring])).sum() / weights.sum()
        m1 = (weights * np.exp(-1j * phi[ring])).sum() / weights.sum()
        assert abs(m2) > 0.5  # two strong arms
        assert abs(m1) < 0.05  # symmetric under a half-turn
        phases[radius] = np.angle(m2)
    turn = np.angle(np.exp(1j * (phases[25.0] - phases[15.0])))
    expected = np.angle(np.exp(-2j * math.log(25.0 / 15.0) / math.tan(pitch)))
    assert turn == pytest.approx(expected, abs=0.15)


def test_unknown_kind_and_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        structure_image("bar", psf=DELTA_PSF)
    with pytest.raises(ValueError, match="width out of range for ring"):
        structure_image("ring", psf=DELTA_PSF, width=0.0)
    with pytest.raises(ValueError, match="pitch out of range for spiral"):
        structure_image("spiral", psf=DELTA_PSF, pitch=0.0)
    # a parameter the kind does not use may be anything
    structure_image("ring", psf=DELTA_PSF, pitch=0.0)


def test_add_profiles_puts_a_delta_at_its_position_as_the_psf(kids_psf: np.ndarray) -> None:
    delta = np.zeros((1, 5, 5), dtype=np.float32)
    delta[0, 2, 2] = 1.0
    image = np.zeros((60, 70), dtype=np.float32)
    add_profiles(image, np.array([30.0]), np.array([25.0]), np.array([10.0]), delta, psf=kids_psf)
    r = kids_psf.shape[0] // 2
    np.testing.assert_allclose(
        image[25 - r : 25 + r + 1, 30 - r : 30 + r + 1], 10.0 * kids_psf, atol=1e-6
    )
    assert image.sum() == pytest.approx(10.0, rel=1e-5)


def test_add_profiles_shifts_by_the_sub_pixel_offset_and_clips(kids_psf: np.ndarray) -> None:
    disc = structure_profiles(
        "ring", 21, 3, q=[1.0], theta=[0.0], radius=[4.0], width=[2.0], angle=[0.0], pitch=[0.1]
    )
    image = np.zeros((80, 80), dtype=np.float32)
    add_profiles(image, np.array([40.3]), np.array([39.8]), np.array([100.0]), disc, psf=kids_psf)
    yy, xx = np.indices(image.shape)
    assert (image * xx).sum() / image.sum() == pytest.approx(40.3, abs=1e-3)
    assert (image * yy).sum() / image.sum() == pytest.approx(39.8, abs=1e-3)
    edge = np.zeros((80, 80), dtype=np.float32)
    add_profiles(edge, np.array([0.0]), np.array([40.0]), np.array([100.0]), disc, psf=kids_psf)
    assert 40.0 < edge.sum() < 60.0  # about half is off the image
    with pytest.raises(ValueError, match="profiles must have shape"):
        add_profiles(
            image, np.array([1.0]), np.array([1.0]), np.array([1.0]), disc[0], psf=kids_psf
        )


def test_source_peaks_are_the_peaks_of_isolated_rendered_sources(kids_psf: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    n = 6
    sources = {
        "x": rng.uniform(30, 130, n),
        "y": rng.uniform(30, 130, n),
        "flux": rng.uniform(100, 1000, n),
        "n_sersic": rng.uniform(0.5, 4, n),
        "r_eff": rng.uniform(0.5, 5, n),
        "q": rng.uniform(0.3, 1, n),
        "theta": rng.uniform(0, 3, n),
        "point": np.arange(n) == 0,
    }
    peaks = source_peaks(psf=kids_psf, **sources)
    for k in range(n):
        alone = render_sources(
            SHAPE, psf=kids_psf, **{name: v[k : k + 1] for name, v in sources.items()}
        )
        assert peaks[k] == pytest.approx(alone.max(), rel=1e-5)
