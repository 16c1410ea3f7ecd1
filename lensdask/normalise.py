"""The one image normalisation of the classifier: training set, training and scoring.

As in the reference run, each stamp is scaled linearly onto [0, 255] by its own minimum and
maximum, taken over its finite pixels. Non-finite pixels (NaN outside the tile image, and
+-inf, treated like NaN) become 0 after scaling; a constant stamp becomes all zeros. A stamp
without any finite pixel has no image to scale and would become all zeros too, which a
network scores like any other image: callers keep such stamps out (scoring gives them no
``p_cnn``; the training set takes only stamps with :func:`nonfinite_fraction` 0). The model
card records :data:`NORMALISATION` so that scoring applies exactly the transform the model
was trained with.

Stamps of several bands, shape (N, H, W, B), are scaled in one of two ways
(:data:`MODES`, :func:`normalise_bands`): ``per-band``, each band of a stamp by its own
minimum and maximum (every channel spans [0, 255]; the colours are lost, the shapes in
each band kept), or ``joint``, all bands of a stamp by one minimum and maximum (the
colours kept: a blue arc stays brighter in g than in i, relative to the red lens galaxy).
Their names, as recorded, are :func:`normalisation_name`'s.
"""

from __future__ import annotations

import numpy as np

NORMALISATION = "minmax-255"
"""Name and version of the transform, as stored in training sets and model cards."""
MODES = ("per-band", "joint")
"""How stamps of several bands are scaled (see the module docstring)."""


def normalisation_name(bands: int, mode: str) -> str:
    """The recorded name of the transform of stamps of ``bands`` bands: :data:`NORMALISATION`
    for one band (both modes are the same), else ``minmax-255-<mode>``."""
    if mode not in MODES:
        raise ValueError(f"normalise: one of {', '.join(MODES)}, got {mode!r}")
    return NORMALISATION if bands == 1 else f"{NORMALISATION}-{mode}"


def known_normalisations() -> tuple[str, ...]:
    """Every name :func:`normalisation_name` gives."""
    return (NORMALISATION, *(f"{NORMALISATION}-{mode}" for mode in MODES))


def normalise_bands(images: np.ndarray, *, mode: str) -> np.ndarray:
    """Scale stamps of several bands onto [0, 255], ``per-band`` or ``joint``.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, B)
        Stamps in any linear unit (counts), bands last; NaN where there is no data.
    mode : str
        One of :data:`MODES`.

    Returns
    -------
    ndarray, shape (N, H, W, B), float32, in [0, 255]
        Each band of a stamp as :func:`normalise_stamps` scales it alone (``per-band``), or
        all bands of a stamp as one image (``joint``).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images: expected shape (N, H, W, B), got {images.shape}")
    if mode not in MODES:
        raise ValueError(f"normalise: one of {', '.join(MODES)}, got {mode!r}")
    n, height, width, bands = images.shape
    by_band = np.moveaxis(images, -1, 1)  # (N, B, H, W)
    if mode == "per-band":
        flat = normalise_stamps(by_band.reshape(n * bands, height, width))
    else:
        flat = normalise_stamps(by_band.reshape(n, bands * height, width))
    return np.ascontiguousarray(np.moveaxis(flat.reshape(n, bands, height, width), 1, -1))


def normalise_for(images: np.ndarray, normalisation: str) -> np.ndarray:
    """Apply the transform a training set or model card names (:func:`normalisation_name`)
    to stamps of shape (N, H, W) (one band) or (N, H, W, B)."""
    if normalisation == NORMALISATION and np.ndim(images) == 3:
        return normalise_stamps(images)
    mode = normalisation.removeprefix(f"{NORMALISATION}-")
    if mode not in MODES or np.ndim(images) != 4:
        raise ValueError(
            f"normalisation {normalisation!r} does not apply to stamps of shape "
            f"{np.shape(images)} (known: {', '.join(known_normalisations())})"
        )
    return normalise_bands(images, mode=mode)


def nonfinite_fraction(images: np.ndarray) -> np.ndarray:
    """Fraction of the pixels of each stamp that are NaN, +inf or -inf.

    Parameters
    ----------
    images : ndarray, shape (N, H, W)

    Returns
    -------
    ndarray, shape (N,), float32
        Counted exactly, then rounded to float32; 1 for a stamp without any finite pixel.
    """
    images = np.asarray(images)
    return (~np.isfinite(images)).mean(axis=(1, 2), dtype=np.float64).astype(np.float32)


def normalise_stamps(images: np.ndarray) -> np.ndarray:
    """Scale each stamp linearly onto [0, 255] by its own minimum and maximum.

    Parameters
    ----------
    images : ndarray, shape (N, H, W)
        Stamps in any linear unit (counts); NaN (or +-inf) where there is no data. Each
        stamp should have a finite pixel (see the module's docstring).

    Returns
    -------
    ndarray, shape (N, H, W), float32, in [0, 255]
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"images: expected shape (N, H, W), got {images.shape}")
    result = np.empty_like(images)
    if images.shape[0] == 0:
        return result
    finite = np.isfinite(images)
    if finite.all():
        # the common case, in place and without masks: the same operations in the same
        # order as below, so the same bits
        low = images.min(axis=(1, 2), keepdims=True)
        span = images.max(axis=(1, 2), keepdims=True) - low
        if np.all(np.isfinite(span) & (span > 0)):
            np.subtract(images, low, out=result)
            np.divide(result, span, out=result)
            np.multiply(result, np.float32(255), out=result)
            return np.clip(result, 0, 255, out=result)
    low = np.min(np.where(finite, images, np.inf), axis=(1, 2), keepdims=True)
    high = np.max(np.where(finite, images, -np.inf), axis=(1, 2), keepdims=True)
    span = high - low
    ok = np.isfinite(span) & (span > 0)
    # Divide first: 255 / span overflows float32 for spans below ~1e-36.
    np.divide(
        np.where(finite & ok, images - np.where(ok, low, 0), 0), np.where(ok, span, 1), out=result
    )
    np.multiply(result, np.float32(255), out=result)
    return np.clip(result, 0, 255, out=result)
