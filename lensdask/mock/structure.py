"""Structured galaxies of the mock survey: spiral arms, rings and mergers (pure kernels).

Li et al. (2020) fought three kinds of false positives among their lens candidates:
spirals, ring galaxies and mergers. In the mock survey such a galaxy is its Sersic body,
rendered by :func:`lensdask.mock.render.render_sources` like any galaxy, plus one
*structure* component drawn here:

- ``spiral``: two logarithmic spiral arms in the plane of the disc. The arms carry an
  exponential profile of half-light radius ``radius`` (scale length ``h = radius / b_1``),
  modulated by
  ``cos^ARM_POWER(phi - angle - ln(R / h) / tan(pitch))`` and faded out inside
  :data:`ARM_INNER` scale lengths, where the bulge would be; ``R, phi`` are polar
  coordinates in the (inclined, axis ratio ``q``) disc plane.
- ``ring``: a ring of light, Gaussian in the elliptical radius of the disc plane, of radius
  ``radius`` and standard deviation ``width``.
- ``merger``: a companion galaxy (exponential, half-light radius ``width``) at distance
  ``radius`` and angle ``angle`` from the centre, plus a faint tidal tail holding
  :data:`TAIL_FRACTION` of the component's light: a logarithmic spiral track (pitch angle
  ``pitch``) that starts at the companion and winds outwards through :data:`TAIL_SWEEP`
  radians, Gaussian across (standard deviation ``width``) and fading along its length.

Everything works in pixel coordinates (``x`` the column, ``y`` the row) with angles in
radians from the +x axis towards +y, like :mod:`lensdask.mock.render`.
:func:`structure_profiles` evaluates one kind of component for a batch of galaxies,
supersampled and centred on the central pixel of a stamp; :func:`add_structures` renders a
mixed set into an image through :func:`lensdask.mock.render.add_profiles` (sub-pixel shift,
PSF, flux), grouped by kind and stamp size in chunks of bounded memory.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from lensdask.mock import render

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("spiral", "ring", "merger")
"""Kinds of structure, named as the ``TRUE_TYPE`` of the galaxies that carry them."""
ARM_POWER = 4
"""Spiral arms are ``cos**ARM_POWER`` of the arm phase (even: two arms)."""
ARM_INNER = 1.0
"""Spiral arms fade in over this many disc scale lengths from the centre."""
TAIL_FRACTION = 0.2
"""Share of a merger's structure light in its tidal tail (the rest is the companion)."""
TAIL_SWEEP = 0.75 * math.pi
"""Angle a tidal tail winds through around the merger's centre, radians."""
EXP_B = float(render.sersic_b(1.0))
"""Sersic ``b_1``: an exponential profile of half-light radius ``r`` has scale ``r / b_1``."""


def structure_extent(
    kind: str, *, radius: np.ndarray, width: np.ndarray, pitch: np.ndarray
) -> np.ndarray:
    """How far the structure of each galaxy reaches from its centre, pixels.

    Spiral arms: ``R_EFF_EXTENT * radius`` (like a Sersic body); a ring: ``radius + 4
    width``; a merger: the farther of its companion (``radius + R_EFF_EXTENT * width``)
    and the end of its tail.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    radius, width : ndarray, shape (k,), pixels
    pitch : ndarray, shape (k,), radians

    Returns
    -------
    ndarray, shape (k,), pixels
    """
    radius = np.asarray(radius, dtype=np.float64)
    if kind == "spiral":
        return render.R_EFF_EXTENT * radius
    width = np.asarray(width, dtype=np.float64)
    if kind == "ring":
        return radius + 4.0 * width
    if kind == "merger":
        tail_end = radius * np.exp(TAIL_SWEEP * np.abs(np.tan(pitch))) + 3.0 * width
        return np.maximum(radius + render.R_EFF_EXTENT * width, tail_end)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def structure_profiles(
    kind: str,
    size: int,
    supersample: int,
    *,
    q: np.ndarray,
    theta: np.ndarray,
    radius: np.ndarray,
    width: np.ndarray,
    angle: np.ndarray,
    pitch: np.ndarray,
) -> np.ndarray:
    """Unconvolved structure components of ``k`` galaxies of one kind, each centred on the
    central pixel of a ``size`` x ``size`` stamp (see the module docstring).

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    size : int, pixels
        Side of the stamps (odd).
    supersample : int
        Sub-samples per pixel along each axis.
    q : ndarray, shape (k,), dimensionless
        Axis ratio of the inclined disc plane (spiral, ring), in (0, 1].
    theta : ndarray, shape (k,), radians
        Angle of the disc's major axis from +x towards +y (spiral, ring).
    radius : ndarray, shape (k,), pixels
        Half-light radius of the arms' disc (spiral) or radius of the ring (ring), along the
        major axis; distance of the companion (merger).
    width : ndarray, shape (k,), pixels
        Gaussian standard deviation of the ring (ring); half-light radius of the companion
        and half-width of its tail (merger).
    angle : ndarray, shape (k,), radians
        Phase of the arms in the disc plane (spiral); direction of the companion from +x
        towards +y (merger).
    pitch : ndarray, shape (k,), radians
        Signed pitch angle of the arms (spiral) or of the tail's track (merger); the sign
        sets the winding sense; ``0 < |pitch| < pi / 2``.

    Returns
    -------
    ndarray, shape (k, size, size), float32
        Pixel-averaged profiles, each summing to 1 (0 if nothing falls on the stamp).
    """
    grid = render.subpixel_grid(size, supersample).astype(np.float32)
    x, y = grid[None, None, :], grid[None, :, None]

    def col(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)[:, None, None]

    if kind in ("spiral", "ring"):
        cos, sin = col(np.cos(theta)), col(np.sin(theta))
        u = x * cos + y * sin
        v = (y * cos - x * sin) / col(q)
        disc_radius = np.hypot(u, v)
        if kind == "ring":
            light = np.exp(-0.5 * ((disc_radius - col(radius)) / col(width)) ** 2)
        else:
            scaled = disc_radius / col(np.asarray(radius) / EXP_B)
            phase = np.arctan2(v, u) - col(angle)
            phase -= np.log(np.maximum(scaled, 1e-3)) / col(np.tan(pitch))
            light = np.exp(-scaled) * -np.expm1(-((scaled / ARM_INNER) ** 2))
            light *= np.cos(phase) ** ARM_POWER
    elif kind == "merger":
        cx = col(np.asarray(radius) * np.cos(angle))
        cy = col(np.asarray(radius) * np.sin(angle))
        companion = np.exp(-EXP_B * np.hypot(x - cx, y - cy) / col(width))
        turn = np.mod(col(np.sign(pitch)) * (np.arctan2(y, x) - col(angle)), 2 * np.pi)
        track = col(radius) * np.exp(turn * col(np.abs(np.tan(pitch))))
        tail = np.exp(-0.5 * ((np.hypot(x, y) - track) / col(width)) ** 2)
        tail *= np.exp(-2.0 * turn / TAIL_SWEEP) * (turn <= TAIL_SWEEP)
        light = _unit_sum(companion) * (1.0 - TAIL_FRACTION) + _unit_sum(tail) * TAIL_FRACTION
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return _unit_sum(render.bin_mean(light.astype(np.float32), supersample))


def add_structures(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    *,
    kind: np.ndarray,
    q: np.ndarray,
    theta: np.ndarray,
    radius: np.ndarray,
    width: np.ndarray,
    angle: np.ndarray,
    pitch: np.ndarray,
    psf: np.ndarray,
    supersample: int = 3,
    max_stamp: int = 255,
) -> None:
    """Add the PSF-convolved structure components of galaxies into ``image``, in place.

    Each galaxy's component (:func:`structure_profiles`) is evaluated on a stamp that holds
    :func:`structure_extent` (capped at ``max_stamp`` less the PSF), shifted to the galaxy's
    sub-pixel position, convolved with ``psf`` and scaled to ``flux``
    (:func:`lensdask.mock.render.add_profiles`). Galaxies are grouped by kind and stamp
    size; each chunk's supersampled stamps hold at most ``render.CHUNK_ELEMENTS`` samples
    (but at least one galaxy).

    Parameters
    ----------
    image : ndarray, shape (ny, nx), float32, counts
        The image to add into.
    x, y : ndarray, shape (n,), pixels
        Galaxy centres (0-based column and row).
    flux : ndarray, shape (n,), counts
        Flux of each structure component (>= 0; 0 skips the galaxy).
    kind : ndarray of str, shape (n,)
        Kind of each galaxy's structure, one of :data:`KINDS`.
    q, theta, radius, width, angle, pitch : ndarray, shape (n,)
        As for :func:`structure_profiles` (pixels, radians); parameters a kind does not use
        are ignored.
    psf : ndarray, shape (p, p)
        PSF image (odd side).
    supersample : int
        Sub-samples per pixel along each axis.
    max_stamp : int, pixels
        Largest stamp side; odd and larger than the PSF.

    Raises
    ------
    ValueError
        If a kind is unknown or a parameter its kind uses is out of range (naming it).
    """
    kind = np.asarray(kind).astype(str)
    unknown = sorted(set(np.unique(kind).tolist()) - set(KINDS))
    if unknown:
        raise ValueError(f"kind must be one of {KINDS}, got {unknown}")
    params = {
        name: np.broadcast_to(np.asarray(value, dtype=np.float64), kind.shape)
        for name, value in {
            "q": q,
            "theta": theta,
            "radius": radius,
            "width": width,
            "angle": angle,
            "pitch": pitch,
        }.items()
    }
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    flux = np.asarray(flux, dtype=np.float64)
    _check_structures(kind, params)
    psf_radius = np.asarray(psf).shape[0] // 2
    for name in KINDS:
        rows = np.flatnonzero((kind == name) & (flux > 0))
        if rows.size == 0:
            continue
        extent = structure_extent(
            name,
            radius=params["radius"][rows],
            width=params["width"][rows],
            pitch=params["pitch"][rows],
        )
        sizes = render.stamp_sizes(extent, psf_radius=psf_radius, max_stamp=max_stamp)
        for size in np.unique(sizes).tolist():
            members = rows[sizes == size]
            side = size - 2 * psf_radius
            step = max(1, render.CHUNK_ELEMENTS // (side * side * supersample**2))
            for start in range(0, members.size, step):
                idx = members[start : start + step]
                profiles = structure_profiles(
                    name, side, supersample, **{k: v[idx] for k, v in params.items()}
                )
                render.add_profiles(image, x[idx], y[idx], flux[idx], profiles, psf=psf)
        logger.debug("added %d %s structures", rows.size, name)


def _unit_sum(stamps: np.ndarray) -> np.ndarray:
    """Scale each of k stamps (k, m, m) to sum to 1, in place (all-zero stamps stay 0)."""
    total = stamps.sum(axis=(1, 2), keepdims=True, dtype=np.float64)
    stamps *= np.divide(1.0, total, out=np.zeros_like(total), where=total > 0).astype(stamps.dtype)
    return stamps


def _check_structures(kind: np.ndarray, params: dict[str, np.ndarray]) -> None:
    """Raise ValueError naming the first parameter out of range for its galaxy's kind."""
    uses = {
        "q": ("spiral", "ring"),
        "theta": ("spiral", "ring"),
        "radius": KINDS,
        "width": ("ring", "merger"),
        "angle": ("spiral", "merger"),
        "pitch": ("spiral", "merger"),
    }
    for name, kinds in uses.items():
        value = params[name]
        ok = np.isfinite(value)
        if name in ("radius", "width"):
            ok &= value > 0
        elif name == "q":
            ok &= (value > 0) & (value <= 1)
        elif name == "pitch":
            ok &= (value != 0) & (np.abs(value) < 0.5 * np.pi)
        bad = np.flatnonzero(np.isin(kind, kinds) & ~ok)
        if bad.size:
            first = int(bad[0])
            raise ValueError(
                f"{name} out of range for {kind[first]} galaxy {first}: {value[first]!r}"
            )
