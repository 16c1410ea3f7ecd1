"""Lens and light profiles in lenstronomy's conventions, as pure broadcasting NumPy kernels.

Every function takes coordinates ``x, y`` (arcsec) and parameters that broadcast against
them: pass scalars for one system, or arrays of shape ``(B, 1, 1)`` with a shared ``(H, W)``
grid (or a ``(B, H, W)`` grid) for a batch of ``B`` systems. No Python loop runs per system
or per pixel.

Conventions (lenstronomy's, so results can be checked against it):

- ellipticity ``(e1, e2)``: ``phi = arctan2(e2, e1) / 2``, ``q = (1 - |e|) / (1 + |e|)``;
- SIE: the ``NIE`` profile with a vanishing core (``s_scale = 1e-10``), ``theta_E`` the
  Einstein radius of the product-averaged ellipse;
- SHEAR: ``alpha = (gamma1 x + gamma2 y, gamma2 x - gamma1 y)``;
- SERSIC_ELLIPSE: ``amp`` is the surface brightness at ``R_sersic`` on the product-averaged
  elliptical radius, with ``b_n = 1.9992 n - 0.3271`` (lenstronomy's approximation) and the
  radius floored at ``1e-4`` arcsec.
"""

from __future__ import annotations

import numpy as np

SIE_CORE = 1e-10
"""Core radius ``s_scale`` of the SIE, arcsec (lenstronomy's ``SIE`` uses the same)."""
SERSIC_SMOOTHING = 1e-4
"""Least radius at which a Sersic profile is evaluated, arcsec (lenstronomy's floor)."""
Q_MAX = 0.99999999
"""A round SIE (``q = 1``) is evaluated with this axis ratio (lenstronomy's round limit)."""


def check_finite(**params: np.ndarray | float) -> None:
    """Raise ValueError naming the first parameter that holds a NaN or infinity."""
    for name, value in params.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name}: must be finite, got a NaN or infinite value")


def check_positive(**params: np.ndarray | float) -> None:
    """Raise ValueError naming the first parameter that is not finite and > 0."""
    check_finite(**params)
    for name, value in params.items():
        if not np.all(np.asarray(value) > 0):
            raise ValueError(f"{name}: must be > 0, got {np.min(value)!r}")


def check_ellipticity(e1: np.ndarray | float, e2: np.ndarray | float, *, name: str = "e") -> None:
    """Raise ValueError unless ``|e| = sqrt(e1**2 + e2**2) < 1`` (axis ratio in (0, 1])."""
    check_finite(**{f"{name}1": e1, f"{name}2": e2})
    modulus = np.hypot(e1, e2)
    if not np.all(modulus < 1):
        raise ValueError(
            f"{name}1, {name}2: |e| must be < 1 (axis ratio in (0, 1]), got {np.max(modulus)!r}"
        )


def phi_q2ellipticity(
    phi: np.ndarray | float, q: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Ellipticity ``(e1, e2)`` of an ellipse of axis ratio ``q`` and angle ``phi``.

    Parameters
    ----------
    phi : float or ndarray, radians
        Orientation of the major axis, counter-clockwise from the x axis.
    q : float or ndarray, dimensionless
        Axis ratio (minor / major), in (0, 1].

    Returns
    -------
    e1, e2 : ndarray, dimensionless

    Raises
    ------
    ValueError
        If ``q`` is outside (0, 1] or a value is not finite.
    """
    check_finite(phi=phi, q=q)
    q = np.asarray(q, dtype=np.float64)
    if not np.all((q > 0) & (q <= 1)):
        raise ValueError(f"q: the axis ratio must be in (0, 1], got {q.min()!r}..{q.max()!r}")
    modulus = (1 - q) / (1 + q)
    return modulus * np.cos(2 * phi), modulus * np.sin(2 * phi)


def ellipticity2phi_q(
    e1: np.ndarray | float, e2: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Angle (radians) and axis ratio of ellipticity ``(e1, e2)``."""
    phi = np.arctan2(e2, e1) / 2
    modulus = np.minimum(np.hypot(e1, e2), 0.9999)
    return phi, (1 - modulus) / (1 + modulus)


def sie_deflection(
    x: np.ndarray,
    y: np.ndarray,
    *,
    theta_E: np.ndarray | float,
    e1: np.ndarray | float,
    e2: np.ndarray | float,
    center_x: np.ndarray | float = 0.0,
    center_y: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deflection of a singular isothermal ellipsoid (Kormann et al. 1994; Keeton 2001).

    Parameters
    ----------
    x, y : ndarray, arcsec
        Image-plane positions.
    theta_E : float or ndarray, arcsec
        Einstein radius (> 0).
    e1, e2 : float or ndarray, dimensionless
        Ellipticity of the mass, ``|e| < 1``.
    center_x, center_y : float or ndarray, arcsec
        Centre of the lens.

    Returns
    -------
    alpha_x, alpha_y : ndarray, arcsec
        Deflection angles, broadcast shape of the inputs.

    Raises
    ------
    ValueError
        If ``theta_E <= 0``, ``|e| >= 1`` or a parameter is NaN (naming it).
    """
    check_positive(theta_E=theta_E)
    check_ellipticity(e1, e2)
    check_finite(center_x=center_x, center_y=center_y)
    scale, s, q, cos, sin = sie_parameters(theta_E, e1, e2)
    dx = x - center_x
    dy = y - center_y
    # Rotate into the frame of the major axis.
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    root = np.sqrt(1.0 - q**2)
    psi = np.sqrt(q**2 * (s**2 + u**2) + v**2)
    a_u = scale * np.arctan(root * u / (psi + s))
    # arctanh(z) = log1p(2 z / (1 - z)) / 2 with z = root v / (psi + q^2 s)
    den = psi + q**2 * s
    a_v = 0.5 * scale * log1p(2.0 * root * v / (den - root * v))
    return a_u * cos - a_v * sin, a_u * sin + a_v * cos


def log1p(x: np.ndarray) -> np.ndarray:
    """``log(1 + x)`` to a few ulp with one ``np.log`` (several times faster than
    ``np.log1p``): ``log(u) + (x - (u - 1)) / u`` with ``u = 1 + x`` rounded, the second term
    restoring what the rounding lost."""
    u = 1.0 + x
    return np.log(u) + (x - (u - 1.0)) / u


def sie_parameters(
    theta_E: np.ndarray | float, e1: np.ndarray | float, e2: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Constants of the SIE deflection in the frame of the mass's major axis.

    In that frame (``u`` along the major axis) the deflection is
    ``alpha_u = scale * arctan(root u / (psi + s))``,
    ``alpha_v = scale * arctanh(root v / (psi + q**2 s))``, with ``root = sqrt(1 - q**2)``
    and ``psi = sqrt(q**2 (s**2 + u**2) + v**2)`` (lenstronomy's ``NIE`` with
    ``b = theta_E sqrt(q)``).

    Parameters
    ----------
    theta_E : float or ndarray, arcsec
        Einstein radius.
    e1, e2 : float or ndarray, dimensionless
        Ellipticity of the mass (not checked here).

    Returns
    -------
    scale : ndarray, arcsec
        ``b / sqrt(1 - q**2)``.
    s : ndarray, arcsec
        Core radius ``SIE_CORE / sqrt(q)``.
    q : ndarray, dimensionless
        Axis ratio, :data:`Q_MAX` where it is 1 (``b`` and ``s`` use 1).
    cos, sin : ndarray, dimensionless
        Cosine and sine of the major axis's angle.
    """
    phi, q = ellipticity2phi_q(e1, e2)
    # b and s from the axis ratio itself; the formula's q = 1 (only) becomes Q_MAX, as in
    # lenstronomy: any other cap moves deflections by ~1e-8, which shows near a cuspy source.
    b = theta_E / np.sqrt((1.0 + q**2) / (2.0 * q)) * np.sqrt((1 + q**2) / 2)
    s = SIE_CORE / np.sqrt(q)
    q = np.where(q >= 1.0, Q_MAX, q)
    return b / np.sqrt(1.0 - q**2), s, q, np.cos(phi), np.sin(phi)


def shear_deflection(
    x: np.ndarray,
    y: np.ndarray,
    *,
    gamma1: np.ndarray | float,
    gamma2: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Deflection of an external shear centred on the origin.

    Parameters
    ----------
    x, y : ndarray, arcsec
        Image-plane positions.
    gamma1, gamma2 : float or ndarray, dimensionless
        Shear components.

    Returns
    -------
    alpha_x, alpha_y : ndarray, arcsec
    """
    check_finite(gamma1=gamma1, gamma2=gamma2)
    return gamma1 * x + gamma2 * y, gamma2 * x - gamma1 * y


def sersic_b(n_sersic: np.ndarray | float) -> np.ndarray:
    """lenstronomy's approximation of Sersic ``b_n``: ``1.9992 n - 0.3271``, floored at 1e-5.

    The lensed sources use it so that their brightness and ``amp`` mean what they mean in
    lenstronomy's ``SERSIC_ELLIPSE``, and the profiles can be checked against lenstronomy
    to rounding. It is not the exact half-light ``b_n`` (3% low at n = 1/2, 0.4% at
    n = 1): the mock survey's galaxies use the exact one,
    :func:`lensdask.mock.render.sersic_b`.

    Parameters
    ----------
    n_sersic : float or ndarray, dimensionless
        Sersic index.

    Returns
    -------
    ndarray, dimensionless
        ``b_n`` with the shape of ``n_sersic``.
    """
    return np.maximum(1.9992 * np.asarray(n_sersic) - 0.3271, 1e-5)


def sersic_brightness(
    x: np.ndarray,
    y: np.ndarray,
    *,
    amp: np.ndarray | float,
    R_sersic: np.ndarray | float,
    n_sersic: np.ndarray | float,
    e1: np.ndarray | float,
    e2: np.ndarray | float,
    center_x: np.ndarray | float = 0.0,
    center_y: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Surface brightness of an elliptical Sersic profile (lenstronomy's SERSIC_ELLIPSE).

    ``I = amp exp(-b_n [(R / R_sersic)^(1/n) - 1])`` with ``R`` the product-averaged
    elliptical radius.

    Parameters
    ----------
    x, y : ndarray, arcsec
        Positions (source-plane positions for a lensed source).
    amp : float or ndarray, flux / arcsec^2
        Surface brightness at ``R_sersic``.
    R_sersic : float or ndarray, arcsec
        Half-light radius (> 0).
    n_sersic : float or ndarray, dimensionless
        Sersic index (> 0).
    e1, e2 : float or ndarray, dimensionless
        Ellipticity, ``|e| < 1``.
    center_x, center_y : float or ndarray, arcsec
        Centre.

    Returns
    -------
    ndarray, flux / arcsec^2

    Raises
    ------
    ValueError
        If ``R_sersic`` or ``n_sersic`` is not > 0, ``|e| >= 1`` or a parameter is NaN.
    """
    check_positive(R_sersic=R_sersic, n_sersic=n_sersic)
    check_ellipticity(e1, e2)
    check_finite(amp=amp, center_x=center_x, center_y=center_y)
    dx = x - center_x
    dy = y - center_y
    norm = np.sqrt(np.maximum(np.abs(1 - e1**2 - e2**2), 1e-6))
    u = ((1 - e1) * dx - e2 * dy) / norm
    v = (-e2 * dx + (1 + e1) * dy) / norm
    radius2 = np.maximum(u**2 + v**2, SERSIC_SMOOTHING**2)
    r_sersic = np.maximum(R_sersic, SERSIC_SMOOTHING)
    # (R / R_sersic)^(1/n) as exp(log(R^2 / R_sersic^2) / 2n): one log and one exp, no pow.
    reduced = np.exp(np.log(radius2 / r_sersic**2) * (0.5 / n_sersic))
    b_n = sersic_b(n_sersic)
    return amp * np.exp(-b_n * (reduced - 1.0))
