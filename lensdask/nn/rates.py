"""Rates where a survey lives: the true-positive rate at false-positive rates of 1e-2 to
1e-4 and at zero false positives, their bootstrap intervals, and the threshold and the
expected candidates for a false-positive budget per 100,000 targets (pure NumPy kernels).

Definitions (``N`` negatives, ``P`` positives; a score is selected when it is strictly
above the threshold):

- At a false-positive rate ``f`` at most ``k = floor(f N)`` negatives may be selected. The
  threshold is the ``(k+1)``-th highest negative score (``-inf`` when ``k >= N``): every
  negative tied with it is left out, so ties never push the false positives above ``k``
  (they may leave fewer). This is the best TPR of the ROC curve with FPR at most ``f``, the
  same as the highest TPR of scikit-learn's ``roc_curve`` with ``fpr <= k / N``.
- Where ``k = 0`` for ``f > 0`` (fewer than ``1/f`` negatives), the rate rests on no false
  positive at all and says nothing about ``f``: it is undefined (None, with the reason).
- The TPR at zero false positives is the rate above the highest negative score.
- Bootstrap intervals resample positives and negatives separately (with replacement, at
  their own sizes), redo the threshold from the resampled negatives, and take the
  percentiles. The zero-false-positive rate gets none: it rests on the single highest
  negative, an extreme the bootstrap does not reproduce (a resample misses it about 37% of
  the time); its ``interval`` is None with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

FPR_TARGETS = (1e-2, 1e-3, 1e-4)
"""False-positive rates at which the TPR is reported."""
FALSE_POSITIVES_PER_100K = 100.0
"""Default budget of false positives per 100,000 targets for the working threshold (FPR
1e-3: about 127 non-lenses among the KiDS DR4 LRGs, a few hours of visual inspection)."""
SURVEY_SIZES: Mapping[str, int] = {"KiDS DR4 LRG": 126_884, "KiDS DR4 BG": 3_808_963}
"""Targets per survey sample the expected candidates are given for (the reference run's
samples, docs/architecture.md)."""
BOOTSTRAP = 1000
"""Bootstrap resamples per interval."""
CONFIDENCE = 0.95
"""Probability content of the intervals."""
ZERO_FP_NO_INTERVAL = (
    "none: the rate rests on the highest negative score, an extreme the bootstrap does not "
    "reproduce"
)


def allowed_false_positives(fpr: float, negatives: int) -> int:
    """``floor(fpr * negatives)``: the most negatives a threshold at ``fpr`` may select
    (``5.000000001`` of float error counts as 5)."""
    return math.floor(fpr * negatives + 1e-9)


def threshold_for(negatives: np.ndarray, allowed: int) -> float:
    """The lowest threshold above which at most ``allowed`` of ``negatives`` lie.

    Parameters
    ----------
    negatives : ndarray, shape (N,)
        Scores of the negatives.
    allowed : int
        Most negatives with a score strictly above the threshold.

    Returns
    -------
    float
        The ``(allowed + 1)``-th highest negative score; ``-inf`` when ``allowed >= N``.
    """
    negatives = np.asarray(negatives, dtype=np.float64)
    if allowed >= negatives.size:
        return -math.inf
    return float(
        np.partition(negatives, negatives.size - 1 - allowed)[negatives.size - 1 - allowed]
    )


def _check(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positives = np.asarray(positives, dtype=np.float64).ravel()
    negatives = np.asarray(negatives, dtype=np.float64).ravel()
    if positives.size == 0 or negatives.size == 0:
        raise ValueError(
            f"rates need positives and negatives, got {positives.size} positives and "
            f"{negatives.size} negatives"
        )
    if not (np.isfinite(positives).all() and np.isfinite(negatives).all()):
        raise ValueError("scores: the rates need finite scores (a NaN p_CNN was passed)")
    return positives, negatives


def tpr_at_fpr(positives: np.ndarray, negatives: np.ndarray, fpr: float) -> dict[str, Any]:
    """TPR at a false-positive rate, by the definition of the module docstring.

    Parameters
    ----------
    positives, negatives : ndarray
        Scores of the lenses and of the non-lenses.
    fpr : float
        Target false-positive rate, in [0, 1].

    Returns
    -------
    dict
        ``fpr`` (the target), ``allowed`` (``floor(fpr N)``), ``threshold``, ``tpr``,
        ``false_positives`` (negatives above the threshold: what the rate rests on) and
        ``fpr_measured``; ``threshold`` and ``tpr`` are None with a ``reason`` where the
        rate is undefined (``allowed == 0 < fpr``).
    """
    positives, negatives = _check(positives, negatives)
    if not 0 <= fpr <= 1:
        raise ValueError(f"fpr: must be in [0, 1], got {fpr}")
    allowed = allowed_false_positives(fpr, negatives.size)
    result: dict[str, Any] = {"fpr": float(fpr), "allowed": allowed}
    if allowed == 0 and fpr > 0:
        return result | {
            "threshold": None,
            "tpr": None,
            "false_positives": 0,
            "fpr_measured": None,
            "reason": f"undefined: needs at least {math.ceil(1 / fpr - 1e-9)} negatives for one "
            f"false positive, the set has {negatives.size}",
        }
    threshold = threshold_for(negatives, allowed)
    false_positives = int(np.count_nonzero(negatives > threshold))
    return result | {
        "threshold": threshold,
        "tpr": float(np.mean(positives > threshold)),
        "false_positives": false_positives,
        "fpr_measured": false_positives / negatives.size,
    }


def tpr_at_zero_fp(positives: np.ndarray, negatives: np.ndarray) -> dict[str, Any]:
    """TPR above the highest negative score (``threshold``), with ``false_positives`` 0."""
    positives, negatives = _check(positives, negatives)
    threshold = float(negatives.max())
    return {
        "threshold": threshold,
        "tpr": float(np.mean(positives > threshold)),
        "false_positives": 0,
    }


def bootstrap_tpr(
    positives: np.ndarray,
    negatives: np.ndarray,
    fprs: tuple[float, ...],
    *,
    resamples: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> np.ndarray:
    """Percentile bootstrap intervals of :func:`tpr_at_fpr` at each of ``fprs``.

    Positives and negatives are resampled separately at their own sizes from
    ``numpy.random.default_rng(seed)``; each resample's threshold comes from its own
    negatives with the same ``floor(fpr N)``.

    Returns
    -------
    ndarray, shape (len(fprs), 2)
        Lower and upper percentile (``(1 -+ confidence) / 2``) of each rate; NaN where
        the rate is undefined.
    """
    positives, negatives = _check(positives, negatives)
    rng = np.random.default_rng(seed)
    allowed = np.array([allowed_false_positives(f, negatives.size) for f in fprs])
    defined = ~((allowed == 0) & (np.asarray(fprs) > 0))
    order = np.argsort(positives, kind="stable")
    sorted_pos = positives[order]
    draws = np.empty((resamples, len(fprs)))
    for b in range(resamples):
        # times each positive is drawn, in score order: the TPR is a tail sum of them
        counts = np.bincount(
            rng.integers(0, positives.size, positives.size), minlength=positives.size
        )[order]
        tail = np.r_[np.cumsum(counts[::-1])[::-1], 0]
        resample = negatives[rng.integers(0, negatives.size, negatives.size)]
        ordered = -np.sort(-resample)
        for j, k in enumerate(allowed):
            threshold = ordered[k] if k < ordered.size else -np.inf
            draws[b, j] = tail[np.searchsorted(sorted_pos, threshold, side="right")]
    draws /= positives.size
    alpha = 1 - confidence
    bounds = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0).T
    bounds[~defined] = np.nan
    return bounds


def expected_candidates(
    false_positives: int, negatives: int, sizes: Mapping[str, int], *, confidence: float
) -> dict[str, dict[str, float]]:
    """Non-lens candidates expected in each survey sample at a threshold that selects
    ``false_positives`` of ``negatives``: ``size * false_positives / negatives``, with the
    Clopper-Pearson interval of that fraction times the size
    (:func:`lensdask.selection.binomial_interval`).

    The lenses themselves (about one per thousand LRGs, times the TPR) are left out: the
    test split cannot tell their number.
    """
    from lensdask.selection import binomial_interval

    low, high = binomial_interval(false_positives, negatives, confidence=confidence)
    return {
        name: {
            "targets": int(size),
            "expected": size * false_positives / negatives,
            "interval": [float(size * low), float(size * high)],
        }
        for name, size in sizes.items()
    }


def low_fpr_rates(
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    fprs: tuple[float, ...] = FPR_TARGETS,
    false_positives_per_100k: float = FALSE_POSITIVES_PER_100K,
    survey_sizes: Mapping[str, int] = SURVEY_SIZES,
    resamples: int = BOOTSTRAP,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any]:
    """Every low-FPR figure of one set of negatives against the positives (JSON types).

    Parameters
    ----------
    positives, negatives : ndarray
        Scores of the lenses and of the non-lenses.
    fprs : tuple of float
        False-positive rates of the TPRs.
    false_positives_per_100k : float
        Budget of the working threshold: false positives per 100,000 targets.
    survey_sizes : mapping of str to int
        Targets per survey sample, for the expected candidates at the working threshold.
    resamples, confidence, seed
        Of the bootstrap (:func:`bootstrap_tpr`).

    Returns
    -------
    dict
        ``negatives``, ``positives``; ``at_fpr``: a :func:`tpr_at_fpr` entry per rate with
        its bootstrap ``interval`` ([low, high], or None and ``reason``);
        ``at_zero_fp``: :func:`tpr_at_zero_fp` with ``interval`` None and its reason;
        ``working_point``: the :func:`tpr_at_fpr` entry at
        ``false_positives_per_100k / 1e5`` with ``per_100k``, its ``interval`` and the
        ``expected_candidates`` per survey sample (:func:`expected_candidates`; absent
        where the working point is undefined).
    """
    positives, negatives = _check(positives, negatives)
    if not 0 < false_positives_per_100k <= 100_000:
        raise ValueError(
            f"false_positives_per_100k: must be in (0, 100000], got {false_positives_per_100k}"
        )
    working = false_positives_per_100k / 1e5
    targets = (*fprs, working)
    bounds = bootstrap_tpr(
        positives, negatives, targets, resamples=resamples, confidence=confidence, seed=seed
    )
    entries = []
    for fpr, (low, high) in zip(targets, bounds, strict=True):
        entry = tpr_at_fpr(positives, negatives, fpr)
        entry["interval"] = None if entry["tpr"] is None else [float(low), float(high)]
        entries.append(entry)
    point = entries.pop() | {"per_100k": float(false_positives_per_100k)}
    if point["tpr"] is not None:
        point["expected_candidates"] = expected_candidates(
            point["false_positives"], negatives.size, survey_sizes, confidence=confidence
        )
    return {
        "positives": int(positives.size),
        "negatives": int(negatives.size),
        "at_fpr": entries,
        "at_zero_fp": tpr_at_zero_fp(positives, negatives)
        | {"interval": None, "reason": ZERO_FP_NO_INTERVAL},
        "working_point": point,
    }
