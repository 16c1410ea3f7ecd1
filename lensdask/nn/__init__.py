"""Neural network: the ResNet-18 lens classifier (Keras 3, imported lazily by its functions)."""

from __future__ import annotations

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
