"""normalise_stamps: each stamp scaled linearly onto [0, 255] by its own minimum and maximum.

The reference is the definition computed in float64: ``255 (x - min) / (max - min)`` over
the finite pixels, 0 for NaN pixels and for constant stamps.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lensdask.normalise import NORMALISATION, nonfinite_fraction, normalise_stamps

FLOAT32_STEP = 255 * 4 * np.finfo(np.float32).eps
"""A few float32 rounding steps at the top of [0, 255]: the float32 arithmetic's error."""


def reference(images: np.ndarray) -> np.ndarray:
    """The definition in float64, on the float32 values the function sees."""
    images = np.asarray(images, dtype=np.float32).astype(np.float64)
    result = np.zeros_like(images)
    for k, stamp in enumerate(images):
        finite = np.isfinite(stamp)
        if not finite.any():
            continue
        low, high = stamp[finite].min(), stamp[finite].max()
        if high > low:
            result[k][finite] = 255 * (stamp[finite] - low) / (high - low)
    return result


def tolerance(images: np.ndarray) -> float:
    """Bound on the difference made by rounding ``images`` to float32: its values' rounding
    relative to each stamp's span, scaled to 255, plus a few steps of float32 arithmetic."""
    images = np.asarray(images, dtype=np.float32).astype(np.float64)
    worst = 0.0
    for stamp in images:
        finite = stamp[np.isfinite(stamp)]
        if finite.size and finite.max() > finite.min():
            span = finite.max() - finite.min()
            worst = max(worst, np.abs(finite).max() / span)
    return 255 * 8 * np.finfo(np.float32).eps * (1 + worst)


stamps = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=9),
    # on a 1e-6 grid: spans of 0 or >= 1e-6 (see test_a_tiny_span_is_still_0_to_255)
    elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False).map(lambda v: round(v, 6)),
)


def test_the_name_of_the_transform():
    assert NORMALISATION == "minmax-255"


def test_a_stamp_spans_0_to_255():
    rng = np.random.default_rng(0)
    images = rng.normal(100, 20, (4, 21, 21)).astype(np.float32)
    result = normalise_stamps(images)
    assert result.dtype == np.float32 and result.shape == images.shape
    np.testing.assert_array_equal(result.min(axis=(1, 2)), 0)
    np.testing.assert_allclose(result.max(axis=(1, 2)), 255, atol=FLOAT32_STEP)
    # the extreme pixels stay where they were
    flat = images.reshape(4, -1)
    out = result.reshape(4, -1)
    np.testing.assert_array_equal(out.argmin(axis=1), flat.argmin(axis=1))
    np.testing.assert_array_equal(out.argmax(axis=1), flat.argmax(axis=1))
    np.testing.assert_allclose(result, reference(images), atol=FLOAT32_STEP)


@settings(max_examples=200, deadline=None)
@given(images=stamps)
def test_matches_the_definition(images):
    result = normalise_stamps(images)
    assert result.dtype == np.float32 and result.shape == images.shape
    assert ((result >= 0) & (result <= 255)).all()
    np.testing.assert_allclose(result, reference(images), atol=FLOAT32_STEP)
    # each stamp is scaled on its own: a batch is its stamps one by one
    for k in range(images.shape[0]):
        np.testing.assert_array_equal(result[k], normalise_stamps(images[k : k + 1])[0])


@settings(max_examples=200, deadline=None)
@given(
    images=stamps,
    a=st.floats(0.5, 50.0),
    b=st.floats(-1e3, 1e3),
)
def test_an_affine_change_of_unit_changes_nothing(images, a, b):
    spans = images.max(axis=(1, 2)) - images.min(axis=(1, 2))
    assume((spans > 1).all())
    moved = a * images + b
    np.testing.assert_allclose(
        normalise_stamps(moved),
        normalise_stamps(images),
        atol=tolerance(images) + tolerance(moved),
    )


@settings(max_examples=100, deadline=None)
@given(images=stamps, data=st.data())
def test_nan_pixels_become_0(images, data):
    mask = data.draw(hnp.arrays(bool, images.shape))
    holed = np.where(mask, np.nan, images)
    result = normalise_stamps(holed)
    assert np.isfinite(result).all()
    np.testing.assert_array_equal(result[mask], 0)
    # the other pixels are scaled by the finite ones' minimum and maximum
    np.testing.assert_allclose(result, reference(holed), atol=FLOAT32_STEP)


@pytest.mark.parametrize("span", [3.9e-41, 1e-38])
def test_a_tiny_span_is_still_0_to_255(span):
    images = np.array([[[0.0, span], [span / 2, 0.0]]], dtype=np.float32)
    assert images[0, 0, 1] > 0
    with np.errstate(over="ignore", invalid="ignore"):
        result = normalise_stamps(images)
    np.testing.assert_allclose(result[0], [[0, 255], [127.5, 0]], atol=1)


def test_special_stamps():
    images = np.zeros((5, 4, 4), dtype=np.float32)
    images[0] = 7.5  # constant
    images[1] = np.nan  # no data at all
    images[2] = np.inf  # no finite data
    images[3, 0, 0], images[3, 1, 1] = -np.inf, 10.0  # infinities count as no data
    images[4] = np.arange(16).reshape(4, 4)
    result = normalise_stamps(images)
    np.testing.assert_array_equal(result[:3], 0)
    assert result[3, 0, 0] == 0 and result[3, 1, 1] == pytest.approx(255)
    np.testing.assert_allclose(result[4], np.arange(16).reshape(4, 4) * 17, rtol=1e-6)


def test_integer_input_and_empty_batch():
    images = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    np.testing.assert_allclose(normalise_stamps(images), reference(images), rtol=1e-6)
    empty = normalise_stamps(np.empty((0, 5, 5)))
    assert empty.shape == (0, 5, 5) and empty.dtype == np.float32


def test_input_not_modified():
    images = np.array([[[1.0, np.nan], [3.0, 5.0]]], dtype=np.float32)
    before = images.copy()
    normalise_stamps(images)
    np.testing.assert_array_equal(images, before)


@pytest.mark.parametrize("shape", [(5,), (5, 5), (1, 2, 5, 5)])
def test_a_batch_must_be_3d(shape):
    with pytest.raises(ValueError, match=r"expected shape \(N, H, W\)"):
        normalise_stamps(np.ones(shape))


@settings(max_examples=100, deadline=None)
@given(images=stamps)
def test_finite_batches_give_the_same_bits_as_batches_with_holes(images):
    # a batch without NaN takes the in-place path; one NaN pixel elsewhere forces the masked
    # path: the stamps they share must come out bit for bit the same
    holed = np.concatenate([images, np.full((1, *images.shape[1:]), np.nan)])
    np.testing.assert_array_equal(normalise_stamps(images), normalise_stamps(holed)[:-1])


def test_inf_pixels_are_treated_like_nan():
    """+-inf pixels in an otherwise fine stamp neither set the stamp's minimum or maximum
    nor get a value: the stamp is scaled exactly as with NaN in their place."""
    rng = np.random.default_rng(4)
    images = rng.normal(100, 10, (3, 21, 21)).astype(np.float32)
    with_inf = images.copy()
    with_inf[0, 3, 4], with_inf[0, 10, 10], with_inf[1, 0, 0] = np.inf, -np.inf, np.inf
    with_nan = np.where(np.isfinite(with_inf), with_inf, np.nan)
    scaled = normalise_stamps(with_inf)
    np.testing.assert_array_equal(scaled, normalise_stamps(with_nan))
    assert scaled[0, 3, 4] == scaled[0, 10, 10] == scaled[1, 0, 0] == 0
    assert scaled[0].max() == 255 and scaled[0][np.isfinite(with_inf[0])].min() == 0
    np.testing.assert_array_equal(scaled[2], normalise_stamps(images[2:])[0])


def test_nonfinite_fraction_counts_nan_and_both_infinities():
    images = np.zeros((4, 10, 10), dtype=np.float32)
    images[0, 0, :3] = np.nan
    images[0, 5, 5] = np.inf
    images[0, 9, 9] = -np.inf
    images[1] = np.inf
    images[2] = np.nan
    fraction = nonfinite_fraction(images)
    assert fraction.dtype == np.float32
    np.testing.assert_array_equal(fraction, np.float32([5 / 100, 1.0, 1.0, 0.0]))


def test_a_stamp_without_finite_pixels_becomes_zeros():
    """What a caller would get: an image of zeros, which a network scores like any other;
    scoring therefore never passes such a stamp (tests/score/test_nonfinite.py)."""
    images = np.stack([np.full((5, 5), v, np.float32) for v in (np.inf, -np.inf, np.nan)])
    np.testing.assert_array_equal(normalise_stamps(images), 0)
