"""Which scores make candidates: ``p_cnn`` above the threshold of the target's sample."""

from __future__ import annotations

import numpy as np


def candidate_mask(
    sample: np.ndarray, p_cnn: np.ndarray, thresholds: dict[str, float]
) -> np.ndarray:
    """True where ``p_cnn`` is above the threshold of the row's sample (never for a sample
    without a threshold).

    The thresholds are compared at the precision of ``p_cnn`` (float32 in score files), so
    a score stored as 0.98 is not above 0.98.
    """
    sample, p_cnn = np.asarray(sample), np.asarray(p_cnn)
    limit = np.full(sample.shape, np.inf, dtype=p_cnn.dtype)
    for name, threshold in thresholds.items():
        limit[sample == name] = threshold
    return p_cnn > limit
