"""The environment the Keras backends start with, what they compute on (asked without
changing it), and the one setting that lets several processes share a GPU.

TensorFlow's C++ libraries log before they read ``TF_CPP_MIN_LOG_LEVEL``: loading them
prints "All log messages before absl::InitializeLog() ...", the oneDNN notice and, on a
machine without a GPU, "Could not find cuda drivers" (twice: two of its libraries carry
their own copy of absl's logging), and its first look for devices logs "failed call to
cuInit" as an error. :func:`set_backend_env` raises the level to errors only where the
machine has no NVIDIA device, and :func:`quiet_tensorflow_start` applies the level to the
lines of the start-up too.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.abc
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

BACKEND_ENV = {
    # TensorFlow's oneDNN kernels: 2.3x faster training and 1.5x faster inference on this
    # project's CPUs (tests/benchmarks/README.md); off unless asked for in TF 2.21's wheels
    "TF_ENABLE_ONEDNN_OPTS": "1",
    # TensorFlow's C++ start-up chatter (CPU features) is noise for users; "3" (errors too)
    # where there is no NVIDIA device (set_backend_env), for its CUDA errors
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # JAX: take GPU memory as needed, not 75% of it at start, so others can share the GPU
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
}
"""Environment the Keras backends read once, when first imported; a value the user set
stays."""


NO_GPU_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}
"""What changes in :data:`BACKEND_ENV` on a machine without an NVIDIA device: TensorFlow's
C++ errors there are its failed looks for CUDA ("failed call to cuInit"); its real errors
still reach Python as exceptions."""


def has_nvidia_device() -> bool:
    """Whether this machine has an NVIDIA device (a ``/dev/nvidia*`` file or
    ``nvidia-smi``), asked without loading any CUDA library."""
    return bool(glob.glob("/dev/nvidia[0-9]*") or shutil.which("nvidia-smi"))


def set_backend_env() -> None:
    """Put :data:`BACKEND_ENV` (with :data:`NO_GPU_ENV` where the machine has no NVIDIA
    device) into this process's environment, and so its children's, keeping what is set
    already. Call before the backend is imported."""
    env = dict(BACKEND_ENV) if has_nvidia_device() else {**BACKEND_ENV, **NO_GPU_ENV}
    for name, value in env.items():
        os.environ.setdefault(name, value)


ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
"""A line of absl's log (``I0000 00:00:1796.2  3594 port.cc:153] ...``): severity first."""
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
SEVERITIES = "IWEF"


def below_tf_level(line: str) -> bool:
    """Whether ``line`` is a TensorFlow C++ log line below ``TF_CPP_MIN_LOG_LEVEL`` (0 INFO,
    1 WARNING, 2 ERROR, 3 also ERROR; FATAL lines are always kept), or absl's preamble
    of such lines where the level hides anything."""
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return False
    if level <= 0:
        return False
    if line.startswith(ABSL_PREAMBLE):
        return True
    match = ABSL_LINE.match(line)
    return bool(match) and SEVERITIES.index(match.group(1)) < min(level, 3)


@contextlib.contextmanager
def filtered_stderr(drop: Callable[[str], bool]) -> Iterator[None]:
    """Hold what this process writes to its standard error (file descriptor 2, where C++
    libraries write) while inside, then write it out without the lines ``drop`` picks."""
    with contextlib.suppress(ValueError, OSError):
        sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(ValueError, OSError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                held.seek(0)
                text = held.read().decode(errors="replace")
                kept = "".join(line for line in text.splitlines(keepends=True) if not drop(line))
                if kept:
                    os.write(2, kept.encode())
    finally:
        os.close(saved)


class _QuietStart(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` (once) and loads it inside :func:`filtered_stderr`."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the real one, for later
        with filtered_stderr(below_tf_level):
            self.loader.exec_module(module)


def quiet_tensorflow_start() -> None:
    """Make the first ``import tensorflow`` of this process (wherever it happens, e.g. when
    Keras loads its backend) keep its C++ libraries' start-up lines below
    ``TF_CPP_MIN_LOG_LEVEL`` off the terminal, as TensorFlow does after its start-up;
    other lines written meanwhile are written after the import. Does nothing where
    TensorFlow is imported already or this is set up.

    This changes the process's imports: the command line and the workers of the clusters
    lensdask starts call it, the library itself does not.
    """
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietStart) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietStart())


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
