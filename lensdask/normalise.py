"""The one image normalisation of the classifier: training set, training and scoring.

As in the reference run, each stamp is scaled linearly onto [0, 255] by its own minimum and
maximum. NaN pixels (outside the tile image) become 0 after scaling; a constant stamp
becomes all zeros. The model card records :data:`NORMALISATION` so that scoring applies
exactly the transform the model was trained with.
"""

from __future__ import annotations

import numpy as np

NORMALISATION = "minmax-255"
"""Name and version of the transform, as stored in training sets and model cards."""


def normalise_stamps(images: np.ndarray) -> np.ndarray:
    """Scale each stamp linearly onto [0, 255] by its own minimum and maximum.

    Parameters
    ----------
    images : ndarray, shape (N, H, W)
        Stamps in any linear unit (counts); NaN where there is no data.

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
