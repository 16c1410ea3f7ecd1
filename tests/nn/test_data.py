"""Streaming ``trainset.zarr`` into Keras: epoch order, chunk reads, batches, augmentation.

References: the epoch order is checked by its properties, reads against direct Zarr
slicing, augmentation against the geometry of Gaussian blobs whose centroid and width are
known, with the random draws replicated from a second generator of the same seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from lensdask.formats.trainset import ChunkReader
from lensdask.nn.data import NO_AUGMENTATION, Augmentation, augment, epoch_order

SIZE = 101
CENTRE = (SIZE - 1) / 2
YY, XX = np.mgrid[:SIZE, :SIZE].astype(np.float64)


def blobs(n: int, *, y: float = CENTRE, x: float = CENTRE, sigma: float = 4.0) -> np.ndarray:
    """``n`` copies of a round Gaussian of peak 200 at pixel ``(y, x)``, float32."""
    image = 200.0 * np.exp(-((YY - y) ** 2 + (XX - x) ** 2) / (2 * sigma**2))
    return np.repeat(image[None], n, axis=0).astype(np.float32)


def moments(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flux, centroid row, centroid column and RMS radius along rows of each image."""
    images = images.astype(np.float64)
    flux = images.sum(axis=(1, 2))
    cy = (images * YY).sum(axis=(1, 2)) / flux
    cx = (images * XX).sum(axis=(1, 2)) / flux
    sy = np.sqrt((images * (YY - cy[:, None, None]) ** 2).sum(axis=(1, 2)) / flux)
    return flux, cy, cx, sy


# --- epoch_order ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    chunk=st.integers(1, 64),
    seed=st.integers(0, 2**32 - 1),
    epoch=st.integers(0, 1000),
)
def test_epoch_order_is_a_deterministic_chunk_blocked_permutation(n, chunk, seed, epoch):
    order = epoch_order(n, chunk, seed=seed, epoch=epoch)
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    np.testing.assert_array_equal(order, epoch_order(n, chunk, seed=seed, epoch=epoch))
    # Each chunk's examples occupy one run of consecutive positions, whole: a batch touches
    # at most two chunks when batch_size <= chunk.
    chunks = order // chunk
    starts = np.r_[0, np.flatnonzero(np.diff(chunks)) + 1]
    runs = chunks[starts] if n else chunks
    assert len(set(runs.tolist())) == len(runs) == -(-n // chunk)
    lengths = np.diff(np.r_[starts, n]) if n else np.zeros(0)
    expected = np.minimum(chunk, n - runs * chunk)
    np.testing.assert_array_equal(lengths, expected)


def test_epoch_order_changes_with_epoch_and_seed():
    base = epoch_order(101, 16, seed=0, epoch=0)
    assert not np.array_equal(base, epoch_order(101, 16, seed=0, epoch=1))
    assert not np.array_equal(base, epoch_order(101, 16, seed=1, epoch=0))
    # The chunk order changes too, not only the order inside the chunks.
    first_chunks = {int(epoch_order(101, 16, seed=0, epoch=e)[0] // 16) for e in range(12)}
    assert len(first_chunks) > 1


# --- ChunkReader ---------------------------------------------------------------------------


class CountingArray:
    """A Zarr array stand-in that records every read it serves."""

    def __init__(self, array) -> None:
        self.array = array
        self.shape, self.chunks, self.reads = array.shape, array.chunks, []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.array[key]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_chunk_reader_matches_direct_zarr_reads_and_keeps_two_chunks(trainset, data):
    group = zarr.open_group(str(trainset / "train"), mode="r")
    images, labels = group["images"][:], group["label"][:]
    reader = ChunkReader(trainset, "train")
    reader.images = CountingArray(reader.images)
    assert reader.chunk == 16 and len(reader) == images.shape[0]
    for _ in range(4):
        index = np.asarray(
            data.draw(st.lists(st.integers(0, len(reader) - 1), min_size=0, max_size=40)),
            dtype=np.int64,
        )
        got_images, got_labels = reader.read(index)
        assert got_images.dtype == np.float32 and got_labels.dtype == np.float32
        np.testing.assert_array_equal(got_images, images[index])
        np.testing.assert_array_equal(got_labels, labels[index])
        assert len(reader._cache) <= 2
    for key in reader.images.reads:  # whole, chunk-aligned reads only
        assert key.start % reader.chunk == 0 and key.stop - key.start == reader.chunk


def test_chunk_reader_reads_each_chunk_once_in_epoch_order(trainset):
    reader = ChunkReader(trainset, "train")
    reader.images = CountingArray(reader.images)
    order = epoch_order(len(reader), reader.chunk, seed=3, epoch=2)
    for start in range(0, len(order), 10):  # batches that straddle chunk boundaries
        reader.read(order[start : start + 10])
    assert len(reader.images.reads) == -(-len(reader) // reader.chunk)


# --- trainset_sequence ---------------------------------------------------------------------


def batches(sequence) -> list[tuple[np.ndarray, np.ndarray]]:
    return [sequence[i] for i in range(len(sequence))]


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_sequence_batches_have_the_training_shapes_and_content(trainset):
    pytest.importorskip("keras")
    from lensdask.nn.data import trainset_sequence

    group = zarr.open_group(str(trainset / "train"), mode="r")
    images, labels = group["images"][:], group["label"][:]
    n = images.shape[0]
    assert n % 16, "the split must end in a partial batch for this test"
    shuffled = trainset_sequence(trainset, "train", batch_size=16, seed=5)
    assert len(shuffled) == n // 16
    order = epoch_order(n, 16, seed=5, epoch=0)
    for i, (x, y) in enumerate(batches(shuffled)):
        assert x.shape == (16, SIZE, SIZE, 1) and y.shape == (16, 1)
        assert x.dtype == np.float32 and y.dtype == np.float32
        take = order[i * 16 : (i + 1) * 16]
        np.testing.assert_array_equal(x[..., 0], images[take])
        np.testing.assert_array_equal(y[:, 0], labels[take])
    stored = trainset_sequence(trainset, "train", batch_size=16, shuffle=False)
    assert len(stored) == -(-n // 16)
    xs, ys = zip(*batches(stored), strict=True)
    assert xs[-1].shape == (n % 16, SIZE, SIZE, 1)
    np.testing.assert_array_equal(np.concatenate(xs)[..., 0], images)
    np.testing.assert_array_equal(np.concatenate(ys)[:, 0], labels)


def test_sequence_depends_only_on_seed_and_epoch(trainset):
    pytest.importorskip("keras")
    from lensdask.nn.data import trainset_sequence

    def make(**kwargs):
        return trainset_sequence(
            trainset, "train", batch_size=16, seed=7, augmentation=Augmentation(), **kwargs
        )

    first, again = make(), make()
    assert_same_batches(batches(first), batches(again))
    advanced = make()
    for _ in range(3):
        advanced.on_epoch_end()
    resumed = make(initial_epoch=3)
    assert_same_batches(batches(advanced), batches(resumed))
    x0, x3 = first[0][0], resumed[0][0]
    assert not np.array_equal(x0, x3)
    # Augmented: never the stored pixels, but in range.
    assert x3.min() >= 0 and x3.max() <= 255


def test_keras_fit_of_a_resumed_sequence_sees_the_uninterrupted_batches(trainset):
    """What a resume relies on: ``fit(initial_epoch=k)`` on a sequence made with
    ``initial_epoch=k`` trains on the batches (in order) of epoch k of an uninterrupted fit,
    with the fit options of :func:`lensdask.nn.train.fit_model`."""
    keras = pytest.importorskip("keras")
    from lensdask.nn.data import trainset_sequence

    seen: list[tuple[int, float]] = []

    class Recorder(keras.Model):
        def train_step(self, data):
            x, y = data
            seen.append((int(np.asarray(y).sum()), float(np.asarray(x, np.float64).sum())))
            return super().train_step(data)

    def run(initial_epoch: int, epochs: int) -> list[tuple[int, float]]:
        seen.clear()
        inputs = keras.Input((SIZE, SIZE, 1))
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        model = Recorder(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled))
        model.compile("sgd", "binary_crossentropy", run_eagerly=True)
        sequence = trainset_sequence(
            trainset,
            "train",
            batch_size=16,
            seed=2,
            augmentation=Augmentation(),
            initial_epoch=initial_epoch,
        )
        model.fit(sequence, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0)
        return list(seen)

    steps = 101 // 16
    uninterrupted = run(0, 3)
    assert len(uninterrupted) == 3 * steps
    assert run(2, 3) == uninterrupted[2 * steps :]
    assert uninterrupted[:steps] != uninterrupted[steps : 2 * steps]


# --- augment -------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    images=hnp.arrays(
        np.float32, (3, 21, 21), elements=st.floats(0, 255, width=32, allow_subnormal=False)
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_augment_keeps_values_in_range_and_leaves_its_input(images, seed):
    before = images.copy()
    out = augment(images, np.random.default_rng(seed), config=Augmentation(brightness=(0.5, 2)))
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(images, before)


def test_no_augmentation_is_the_identity():
    images = np.random.default_rng(0).uniform(0, 255, (4, 33, 33)).astype(np.float32)
    out = augment(images, np.random.default_rng(1), config=NO_AUGMENTATION)
    np.testing.assert_array_equal(out, images)


def test_rotations_and_flips_keep_flux_and_distance_from_the_centre():
    config = Augmentation(resample=True, shift=0.0, zoom=(1.0, 1.0), brightness=(1.0, 1.0))
    centred = augment(blobs(20), np.random.default_rng(1), config=config)
    flux, cy, cx, _ = moments(centred)
    np.testing.assert_allclose(flux, blobs(1).sum(dtype=np.float64), rtol=1e-3)
    np.testing.assert_allclose(np.c_[cy, cx], CENTRE, atol=1e-3)
    off = blobs(200, y=CENTRE + 20, x=CENTRE + 7)
    flux, cy, cx, _ = moments(augment(off, np.random.default_rng(2), config=config))
    np.testing.assert_allclose(flux, off[0].sum(dtype=np.float64), rtol=1e-3)
    np.testing.assert_allclose(np.hypot(cy - CENTRE, cx - CENTRE), np.hypot(20, 7), atol=0.01)
    # Arbitrary angles, not only multiples of 90 degrees.
    angles = np.degrees(np.arctan2(cy - CENTRE, cx - CENTRE)) % 90
    assert np.histogram(angles, bins=6, range=(0, 90))[0].min() > 10


def test_shifts_move_the_centroid_by_the_drawn_amount():
    config = Augmentation(
        rotate=False, resample=True, shift=3.0, zoom=(1.0, 1.0), brightness=(1.0, 1.0)
    )
    out = augment(blobs(40), np.random.default_rng(3), config=config)
    shifts = np.random.default_rng(3).uniform(-3.0, 3.0, (40, 2))  # the first draw
    _, cy, cx, _ = moments(out)
    np.testing.assert_allclose(cy - CENTRE, shifts[:, 0], atol=1e-3)
    np.testing.assert_allclose(cx - CENTRE, shifts[:, 1], atol=1e-3)


def test_zoom_scales_the_width_by_the_drawn_factor():
    config = Augmentation(
        rotate=False, resample=True, shift=0.0, zoom=(0.8, 1.25), brightness=(1.0, 1.0)
    )
    out = augment(blobs(40), np.random.default_rng(4), config=config)
    rng = np.random.default_rng(4)
    rng.uniform(0, 0, (40, 2))  # the shifts
    zooms = np.exp(rng.uniform(np.log(0.8), np.log(1.25), 40))
    assert zooms.min() < 0.85 and zooms.max() > 1.2
    _, cy, cx, sigma = moments(out)
    np.testing.assert_allclose(sigma / 4.0, zooms, rtol=0.01)
    np.testing.assert_allclose(np.c_[cy, cx], CENTRE, atol=1e-3)


def test_brightness_rescales_and_clips():
    config = Augmentation(
        rotate=False, resample=True, shift=0.0, zoom=(1.0, 1.0), brightness=(0.5, 1.5)
    )
    images = blobs(30) * 1.2  # peak 240: bright copies clip at 255
    out = augment(images, np.random.default_rng(5), config=config)
    rng = np.random.default_rng(5)
    rng.uniform(0, 0, (30, 2))
    rng.uniform(0, 0, 30)
    factors = rng.uniform(0.5, 1.5, 30).astype(np.float32)
    np.testing.assert_allclose(out, np.clip(images * factors[:, None, None], 0, 255), rtol=1e-6)
    assert (out == 255).any()


@pytest.mark.parametrize("seed", range(3))
def test_default_augmentation_moves_the_centre_by_at_most_the_shift(seed):
    config = Augmentation()
    _, cy, cx, _ = moments(augment(blobs(50), np.random.default_rng(seed), config=config))
    assert np.abs(cy - CENTRE).max() <= config.shift + 0.01
    assert np.abs(cx - CENTRE).max() <= config.shift + 0.01
    assert np.abs(cy - CENTRE).max() > config.shift / 2  # the shifts are really drawn


def test_default_augmentation_is_lossless_turns_flips_and_whole_pixel_shifts():
    images = np.random.default_rng(0).uniform(0, 255, (40, 33, 33)).astype(np.float32)
    config = Augmentation(brightness=(1.0, 1.0))
    out = augment(images, np.random.default_rng(9), config=config)
    rng = np.random.default_rng(9)  # the same draws, applied by scipy
    turns, flips = rng.integers(0, 4, 40), rng.random(40) < 0.5
    shifts = rng.integers(-4, 5, (40, 2))
    assert len({tuple(shift) for shift in shifts}) > 20
    for k in range(40):
        expected = np.rot90(images[k], turns[k])
        expected = expected[:, ::-1] if flips[k] else expected
        expected = ndimage.shift(expected, shifts[k], order=0, mode="nearest")
        np.testing.assert_array_equal(out[k], expected)


def test_only_resampling_smooths_the_noise():
    noise = np.random.default_rng(1).normal(100, 10, (64, 101, 101)).astype(np.float32)
    inner = (slice(None), slice(10, -10), slice(10, -10))
    config = Augmentation(brightness=(1.0, 1.0))
    kept = augment(noise, np.random.default_rng(2), config=config)
    resampled = augment(
        noise, np.random.default_rng(2), config=dataclasses.replace(config, resample=True)
    )
    assert kept[inner].std() / noise[inner].std() > 0.99
    assert resampled[inner].std() / noise[inner].std() < 0.85
