"""The lens classifier: a ResNet-18 that maps one r-band cutout to p_CNN.

The network of Li et al. 2020 (after He et al. 2016 and the keras-resnet package's
``ResNet18``): a 7x7 stride-2 convolution stem, batch normalisation, ReLU and a 3x3 stride-2
max-pool, four stages of two basic blocks (3x3 conv-BN-ReLU-3x3 conv-BN plus a shortcut,
added, then ReLU) with 64, 128, 256 and 512 filters, global average pooling and one sigmoid
unit. Where a block changes the shape (stride 2 or another number of filters) its shortcut
is a 1x1 convolution and batch normalisation; elsewhere it is the identity.

Only Keras 3 layers are used, so the same model builds, trains, saves and loads on the
TensorFlow, JAX and PyTorch backends (``KERAS_BACKEND``). Keras is imported inside the
functions: importing this module imports no deep-learning framework.
"""

from __future__ import annotations

import contextlib
import math
import operator
import re
import zlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

STAGE_FILTERS = (64, 128, 256, 512)
"""Filters of the four stages at ``width=1``; the stem has as many as the first stage."""
BLOCKS_PER_STAGE = 2
"""Basic blocks in each stage (ResNet-18: 2-2-2-2)."""
BN_EPSILON = 1e-5
"""Batch-normalisation epsilon, as in keras-resnet and PyTorch."""
BN_MOMENTUM = 0.9
"""Batch-normalisation moving-average momentum, PyTorch's (Keras' default 0.99 lags the
weights for hundreds of steps: on a 9000-image training set the inference-mode AUC stayed
at ~0.5 for three epochs while the batch-statistics AUC was 0.86)."""
INPUT_SCALE = 1 / 255
"""Factor of the first layer: images arrive in [0, 255] and the network sees [0, 1]."""
OUTPUT_NAME = "p_cnn"
"""Name of the output layer, the lens probability p_CNN."""


def stage_filters(width: float) -> tuple[int, int, int, int]:
    """Filters of the four stages for a width multiplier.

    Parameters
    ----------
    width : float
        Multiplier of the ResNet-18 filters (64, 128, 256, 512); > 0.

    Returns
    -------
    tuple of 4 int
        ``max(1, round(f * width))`` for each stage's ``f``.

    Raises
    ------
    ValueError
        If ``width`` is not a finite number > 0.
    """
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a finite number > 0, got {width!r}")
    return tuple(max(1, round(f * width)) for f in STAGE_FILTERS)


def build_resnet18(
    *,
    input_shape: Sequence[int] = (101, 101, 1),
    width: float = 1.0,
    seed: int | None = None,
    name: str = "resnet18",
) -> keras.Model:
    """Build the (uncompiled) ResNet-18 lens classifier.

    Input contract: images of ``input_shape``, channels last, float, normalised to
    [0, 255] as the simulation and cutout stages deliver them. The first layer divides by
    255 (:data:`INPUT_SCALE`); feed pixel values, not pre-scaled ones.

    Parameters
    ----------
    input_shape : sequence of 3 int, (height, width, channels) in pixels
        Shape of one image without the batch axis; 101x101 px r-band cutouts by default.
    width : float
        Multiplier of the filters of every convolution (64, 128, 256, 512 at 1.0), each
        rounded to an integer and at least 1; > 0. Narrow networks are for tests.
    seed : int or None
        Seed of the initial weights: each layer's initialiser gets its own seed derived
        from this one and the layer's name, so the same seed gives the same network in any
        process or thread (None: Keras' global random state).
    name : str
        Name of the model.

    Returns
    -------
    keras.Model
        Input ``image`` of shape (batch, *input_shape); output ``p_cnn`` of shape (batch, 1),
        float32 in (0, 1), the probability that the image shows a lens. The output layer
        computes in float32 under any dtype policy, so mixed precision is safe. With the
        defaults it has 11,180,353 parameters (11,170,753 trainable; the rest are
        batch-normalisation moving statistics).

    Raises
    ------
    ValueError
        If ``width`` is not > 0, or ``input_shape`` is not 3 positive integers.

    Notes
    -----
    Convolutions and the max-pool use ``"same"`` (zero) padding, which for odd sides (101
    px) pads exactly as keras-resnet's explicit ``ZeroPadding2D``. Convolutions have no bias
    (batch normalisation follows) and He-normal initial weights.
    """
    import keras

    shape = _check_input_shape(input_shape)
    filters = stage_filters(width)

    inputs = keras.Input(shape=shape, name="image")
    x = keras.layers.Rescaling(INPUT_SCALE, name="rescale")(inputs)
    x = _conv_bn(x, filters[0], 7, strides=2, seed=seed, name="conv1")
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    for stage, stage_width in enumerate(filters, start=1):
        for block in range(1, BLOCKS_PER_STAGE + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(
                x, stage_width, strides=strides, seed=seed, name=f"stage{stage}_block{block}"
            )
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        dtype="float32",
        kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed(seed, OUTPUT_NAME)),
        name=OUTPUT_NAME,
    )(x)
    return keras.Model(inputs, outputs, name=name)


@contextlib.contextmanager
def precision_policy(*, mixed: bool) -> Iterator[None]:
    """Build and load models in mixed precision (``mixed_float16``: float16 compute, float32
    weights) or in float32 inside the ``with`` block; Keras' previous dtype policy is
    restored after it.

    Keras takes a model's dtype policy from its global (per-thread) setting when the model
    is built or loaded: a layer's own ``dtype`` does not reach the model's policy, which
    decides whether ``compile`` wraps the optimizer for loss scaling. Set for good, the
    policy would change every later model of the thread, and a Dask worker's threads run
    other tasks afterwards.

    Parameters
    ----------
    mixed : bool
        Mixed precision (True) or float32 (False).
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def architecture(model: keras.Model) -> dict[str, Any]:
    """Describe a network made by :func:`build_resnet18`, for the model card.

    Parameters
    ----------
    model : keras.Model
        A model built by :func:`build_resnet18` (or loaded from one's ``.keras`` file).

    Returns
    -------
    dict
        JSON-able: ``family``, ``name``, ``input_shape`` (pixels, channels last),
        ``input_scale`` (factor applied to the [0, 255] input), ``width`` (first-stage
        filters / 64: the ``width`` it was built with wherever ``64 * width`` is an
        integer), ``filters`` (``stem`` and ``stages``), ``blocks`` (per stage),
        ``conv_layers``, ``output``, ``dtype_policy`` and ``params`` (``total``,
        ``trainable``, ``non_trainable``).

    Raises
    ------
    ValueError
        If ``model`` lacks the layers that :func:`build_resnet18` names.
    """
    import keras

    stages = range(1, len(STAGE_FILTERS) + 1)
    try:
        stem = model.get_layer("conv1").filters
        filters = [model.get_layer(f"stage{s}_block1_conv1").filters for s in stages]
        scale = model.get_layer("rescale").scale
        model.get_layer(OUTPUT_NAME)
    except ValueError as err:
        raise ValueError(f"model {model.name!r} was not built by build_resnet18") from err
    names = [layer.name for layer in model.layers]
    blocks = [sum(bool(re.fullmatch(rf"stage{s}_block\d+_add", n)) for n in names) for s in stages]
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = sum(math.prod(w.shape) for w in model.weights)
    return {
        "family": "ResNet-18",
        "name": model.name,
        "input_shape": [int(side) for side in model.input_shape[1:]],
        "input_scale": float(scale),
        "width": filters[0] / STAGE_FILTERS[0],
        "filters": {"stem": int(stem), "stages": [int(f) for f in filters]},
        "blocks": blocks,
        "conv_layers": sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers),
        "output": OUTPUT_NAME,
        "dtype_policy": model.dtype_policy.name,
        "params": {
            "total": int(total),
            "trainable": int(trainable),
            "non_trainable": int(total - trainable),
        },
    }


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``input_shape`` as a tuple of 3 positive ints, or a ValueError naming it."""
    try:
        shape = tuple(operator.index(side) for side in input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"input_shape must be 3 positive integers (height, width, channels), "
            f"got {input_shape!r}"
        )
    return shape


def layer_seed(seed: int | None, name: str) -> int | None:
    """The initialiser seed of layer ``name`` in a network of seed ``seed`` (None: None)."""
    if seed is None:
        return None
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31


def _conv_bn(
    x: Any, filters: int, kernel: int, *, strides: int, seed: int | None, name: str
) -> Any:
    """Convolution without bias then batch normalisation (layers ``name``, ``name_bn``)."""
    import keras

    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.HeNormal(seed=layer_seed(seed, name)),
        name=name,
    )(x)
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{name}_bn"
    )(x)


def _basic_block(x: Any, filters: int, *, strides: int, seed: int | None, name: str) -> Any:
    """A basic residual block: two 3x3 conv-BN, shortcut (projected if the shape changes)."""
    import keras

    y = _conv_bn(x, filters, 3, strides=strides, seed=seed, name=f"{name}_conv1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv_bn(y, filters, 3, strides=1, seed=seed, name=f"{name}_conv2")
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides=strides, seed=seed, name=f"{name}_shortcut")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu2")(y)
