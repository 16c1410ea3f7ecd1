"""The environment the Keras backends start with, what they compute on (asked without
changing it), and the one setting that lets several processes share a GPU."""

from __future__ import annotations

import contextlib
import os

BACKEND_ENV = {
    # TensorFlow's oneDNN kernels: 2.3x faster training and 1.5x faster inference on this
    # project's CPUs (tests/benchmarks/README.md); off unless asked for in TF 2.21's wheels
    "TF_ENABLE_ONEDNN_OPTS": "1",
    # TensorFlow's C++ start-up chatter (CPU features) is noise for users
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # JAX: take GPU memory as needed, not 75% of it at start, so others can share the GPU
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
}
"""Environment the Keras backends read once, when first imported; a value the user set
stays."""


def set_backend_env() -> None:
    """Put :data:`BACKEND_ENV` into this process's environment (and so its children's),
    keeping what is set already. Call before the backend is imported."""
    for name, value in BACKEND_ENV.items():
        os.environ.setdefault(name, value)


def has_gpu() -> bool:
    """Whether the Keras backend (TensorFlow, JAX or PyTorch) sees a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def enable_memory_growth() -> None:
    """Let TensorFlow take GPU memory as it needs it instead of all of it at start, so that
    other processes (workers, the next model) can share the GPU.

    Does nothing on other backends (JAX is told by :data:`BACKEND_ENV`), and
    keeps what is set on a GPU that TensorFlow has already initialised.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        # RuntimeError: the GPU is already initialised; keep what is set.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
