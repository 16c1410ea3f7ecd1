"""Benchmark: does a model score raw cutouts as well as images resampled like its training set?

Loads a model directory (``lensdask train``) and predicts the test split of a training set
three ways: the stored (raw) images, the same images turned by a random multiple of 90
degrees and flipped (lossless, as the default augmentation), and the same images rotated by
an arbitrary angle in one bilinear resampling (as ``--arbitrary-rotation`` augments, without
its shifts, zooms and brightness rescales). Prints the test AUC of each and the ratio of the
noise RMS (median absolute deviation of the outer 10 px, over all images) of the transformed
images to the raw ones.

Bilinear resampling averages neighbouring pixels, so it lowers the sky noise: a model
trained on resampled images sees noisier images when it scores real cutouts. A model whose
AUC is clearly higher on resampled than on raw images has learnt that mismatch.

    .venv/bin/python tests/benchmarks/bench_augmentation_noise.py MODEL_DIR TRAINSET
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from lensdask.devices import set_backend_env


def border_noise(images: np.ndarray) -> float:
    """Median over images of the MAD-based RMS of the outer 10 px (rows)."""
    edge = np.concatenate(
        [images[:, :10].reshape(len(images), -1), images[:, -10:].reshape(len(images), -1)], 1
    )
    mad = np.median(np.abs(edge - np.median(edge, axis=1, keepdims=True)), axis=1)
    return float(np.median(1.4826 * mad))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("trainset")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    set_backend_env()
    import zarr

    from lensdask.formats.model_dir import load_model
    from lensdask.nn.data import NO_AUGMENTATION, augment
    from lensdask.nn.evaluate import auc, predict_images, roc_curve

    group = zarr.open_group(f"{args.trainset}/test", mode="r")
    images, labels = group["images"][:], group["label"][:]
    model, card = load_model(args.model_dir)
    rng = np.random.default_rng(args.seed)
    ways = {
        "raw": images,
        "turned and flipped (lossless)": augment(
            images, rng, config=dataclasses.replace(NO_AUGMENTATION, rotate=True)
        ),
        "arbitrary angle (bilinear)": augment(
            images, rng, config=dataclasses.replace(NO_AUGMENTATION, rotate=True, resample=True)
        ),
    }
    noise = border_noise(images)
    print(f"model {card['model_id']}, {labels.size} test images ({int(labels.sum())} lenses)")
    for name, data in ways.items():
        fpr, tpr, _ = roc_curve(labels, predict_images(model, data))
        print(f"{name:32s} AUC {auc(fpr, tpr):.4f}   noise RMS x{border_noise(data) / noise:.3f}")


if __name__ == "__main__":
    main()
