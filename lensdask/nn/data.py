"""Streaming a training set from ``trainset.zarr`` into Keras, with augmentation.

Images are already normalised to [0, 255] by the simulation (:mod:`lensdask.normalise`);
nothing here changes their scale except the brightness augmentation. Batches are read
chunk by chunk (the Zarr chunk is the simulation batch), with at most two chunks in memory,
never the whole set. Each epoch visits the chunks in a new random order and the examples
of a chunk in a new random order, both drawn from ``SeedSequence([seed, n])`` where ``n``
counts the dataset's epoch ends from ``initial_epoch`` (Keras also ends one before the first
epoch), so a resumed run sees the same batches as an uninterrupted one.

Augmentation: a random multiple of 90 degrees and a random flip, a shift by a few whole
pixels (all lossless) and a brightness rescale (clipped to [0, 255]). The reference run also
rotated by arbitrary angles; with ``resample`` the shift is instead combined with a rotation
by an arbitrary angle and a zoom in one bilinear affine resampling. Resampling averages
neighbouring pixels, which lowers the sky noise of the training images below that of the
cutouts a model later scores: a model trained so reached a test AUC of 0.9475 on the raw test
images and 0.963 on resampled ones (tests/benchmarks/README.md), so it is off by default.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lensdask.formats.trainset import ChunkReader


@dataclass(frozen=True, kw_only=True)
class Augmentation:
    """Ranges of the random augmentations (all on by default)."""

    rotate: bool = True
    """Random multiples of 90 degrees and flips (and arbitrary angles with ``resample``)."""
    shift: float = 4.0
    """Largest shift along each axis, pixels (whole pixels unless ``resample``)."""
    resample: bool = False
    """Rotate by arbitrary angles, shift by fractions of a pixel and zoom, in one bilinear
    resampling (it smooths the noise: see the module docstring)."""
    zoom: tuple[float, float] = (1 / 1.1, 1.1)
    """Range of the zoom factor (log-uniform; with ``resample`` only)."""
    brightness: tuple[float, float] = (0.9, 1.1)
    """Range of the brightness factor (uniform); results are clipped to [0, 255]."""


NO_AUGMENTATION = Augmentation(rotate=False, shift=0.0, zoom=(1.0, 1.0), brightness=(1.0, 1.0))


def augment(images: np.ndarray, rng: np.random.Generator, *, config: Augmentation) -> np.ndarray:
    """Randomly rotated, flipped, shifted, rescaled (and with ``config.resample``, zoomed)
    copies of ``images``.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H, W, B), in [0, 255]
        Every band of an image gets the same rotation, flip, shift and rescale.
    rng : numpy.random.Generator
    config : Augmentation

    Returns
    -------
    ndarray, shape of ``images``, float32, in [0, 255]
    """
    n = images.shape[0]
    out = np.array(images, dtype=np.float32)
    if config.rotate:
        turns = rng.integers(0, 4, n)
        flips = rng.random(n) < 0.5
        for k in range(4):
            sel = turns == k
            out[sel] = np.rot90(out[sel], k, axes=(1, 2))
        out[flips] = out[flips, :, ::-1]
    if config.resample:
        _resample(out, rng, config=config)
    elif config.shift >= 1:
        _shift_whole_pixels(out, rng.integers(-int(config.shift), int(config.shift) + 1, (n, 2)))
    factor = rng.uniform(*config.brightness, n).astype(np.float32)
    out *= factor.reshape(n, *(1,) * (out.ndim - 1))
    return np.clip(out, 0, 255, out=out)


def _shift_whole_pixels(images: np.ndarray, shifts: np.ndarray) -> None:
    """Move image ``k`` by ``shifts[k]`` = (dy, dx) whole pixels in place, repeating the
    edge pixels into the uncovered border."""
    height, width = images.shape[1:3]
    pad = int(np.abs(shifts).max(initial=0))
    if pad == 0:
        return
    bands = ((0, 0),) * (images.ndim - 3)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), *bands), mode="edge")
    for k, (dy, dx) in enumerate(shifts):
        images[k] = padded[k, pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def _resample(images: np.ndarray, rng: np.random.Generator, *, config: Augmentation) -> None:
    """Rotate by arbitrary angles (if ``config.rotate``), shift and zoom each image in place,
    in one bilinear affine resampling."""
    from scipy import ndimage

    n, height, width = images.shape[:3]
    angles = rng.uniform(0, 2 * np.pi, n) if config.rotate else np.zeros(n)
    shifts = rng.uniform(-config.shift, config.shift, (n, 2))
    zooms = np.exp(rng.uniform(*np.log(config.zoom), n))
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    for k in range(n):
        if angles[k] == 0 and zooms[k] == 1 and not shifts[k].any():
            continue
        cos, sin = np.cos(angles[k]) / zooms[k], np.sin(angles[k]) / zooms[k]
        matrix = np.array([[cos, -sin], [sin, cos]])
        offset = centre - matrix @ (centre + shifts[k])
        planes = images[k] if images.ndim == 3 else np.moveaxis(images[k], -1, 0)
        for plane in planes if images.ndim == 4 else [planes]:
            plane[...] = ndimage.affine_transform(
                plane.copy(), matrix, offset, order=1, mode="nearest"
            )


def epoch_order(n: int, chunk: int, *, seed: int, epoch: int) -> np.ndarray:
    """Example order of an epoch: chunks in random order, examples shuffled in each chunk."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
    starts = rng.permutation(np.arange(0, n, chunk))
    return np.concatenate(
        [start + rng.permutation(min(chunk, n - start)) for start in starts] or [np.zeros(0, int)]
    ).astype(np.int64)


@functools.cache
def _py_dataset_class() -> type:
    import keras

    class TrainsetSequence(keras.utils.PyDataset):
        """A split of ``trainset.zarr`` as a Keras dataset of ``(images, labels)`` batches.

        Parameters
        ----------
        trainset : path
        split : str
        batch_size : int
        seed : int
            Shuffling and augmentation seed.
        shuffle : bool
            Shuffle (training) or keep the stored order (evaluation).
        augmentation : Augmentation or None
            None: no augmentation.
        initial_epoch : int
            Epoch number of the first epoch (after a resume).
        """

        def __init__(
            self,
            trainset: str | Path,
            split: str,
            *,
            batch_size: int,
            seed: int = 0,
            shuffle: bool = True,
            augmentation: Augmentation | None = None,
            initial_epoch: int = 0,
        ) -> None:
            super().__init__()
            self.reader = ChunkReader(trainset, split)
            self.batch_size = batch_size
            self.seed = seed
            self.shuffle = shuffle
            self.augmentation = augmentation
            self.epoch = initial_epoch
            self._order = self._make_order()

        def _make_order(self) -> np.ndarray:
            n = len(self.reader)
            if not self.shuffle:
                return np.arange(n)
            return epoch_order(n, self.reader.chunk, seed=self.seed, epoch=self.epoch)

        def __len__(self) -> int:
            # Training drops the last partial batch: every step has the same shape.
            n = len(self.reader)
            return n // self.batch_size if self.shuffle else -(-n // self.batch_size)

        def __getitem__(self, index: int):
            take = self._order[index * self.batch_size : (index + 1) * self.batch_size]
            images, labels = self.reader.read(take)
            if self.augmentation is not None:
                rng = np.random.default_rng(
                    np.random.SeedSequence([self.seed, self.epoch, index, 1])
                )
                images = augment(images, rng, config=self.augmentation)
            return (images[..., None] if images.ndim == 3 else images), labels[:, None]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self._order = self._make_order()

    return TrainsetSequence


def trainset_sequence(trainset: str | Path, split: str, **kwargs):
    """A :class:`keras.utils.PyDataset` over one split (see ``TrainsetSequence``)."""
    return _py_dataset_class()(trainset, split, **kwargs)
