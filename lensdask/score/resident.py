"""The classifier resident on every worker: loaded once per worker process, kept there.

Tasks carry a model directory and its ``model_id``, never weights. The first use on a
worker (or :class:`ModelPlugin`'s setup, when a scoring run starts or a worker joins)
loads the model with Keras' safe mode after checking its card's hash, prepares the Keras
backend for the device (TensorFlow's GPU memory growth so that it shares the GPU, mixed
precision on GPUs, the worker's threads on CPUs), compiles it for its one batch shape and
keeps it in this process's :data:`MODELS`; every later task on that worker asking for the
same model with the same batch size and precision finds it there. A committee
(:mod:`lensdask.nn.committee`) is resident as all its members together, under the
committee's ``model_id``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed.diagnostics.plugin import WorkerPlugin

from lensdask.config import ScoreConfig
from lensdask.devices import set_backend_env

logger = logging.getLogger(__name__)

GPU_BATCH = 1024
"""Images per model call on a GPU when the configuration does not say."""
CPU_BATCH = 256
"""Images per model call on a CPU when the configuration does not say."""

MODELS: dict[str, ResidentModel] = {}
"""The models resident in this process, by model id. One copy of each: a request for a
resident model with another batch size, precision or Keras backend loads it again, in the
place of the old copy (a worker holds one network's weights, not one per setting)."""
LOADS: Counter[str] = Counter()
"""How many times each model id was loaded in this process (once, unless its settings
changed)."""
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ResidentModel:
    """A loaded classifier (one network, or a committee's members) and how it runs here."""

    models: tuple[Any, ...]
    """The Keras networks, a committee's in member order (float16 compute on GPUs when
    mixed precision is on)."""
    card: dict[str, Any]
    """Its model card (a committee's: with ``committee``)."""
    device: str
    """``"gpu"`` or ``"cpu"``."""
    batch_size: int
    """Images per model call, the same for every call."""
    mixed_precision: bool
    """Whether it computes in float16 (Keras' ``mixed_float16`` policy)."""
    backend: str
    """The Keras backend it runs on."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """One model call at a time: Keras' JAX backend donates the model's state buffers to
    each call, so concurrent calls from a worker's threads would find them deleted."""

    @property
    def model_id(self) -> str:
        """The card's model id (hash of ``model.keras``, or of a committee's members' ids)."""
        return self.card["model_id"]

    @property
    def model(self) -> Any:
        """The first network (a single-network model's only one)."""
        return self.models[0]

    @property
    def combination(self) -> str | None:
        """How a committee's p_CNN combines its members' (None: one network)."""
        return self.card.get("committee", {}).get("combination")

    def runs_as(self, config: ScoreConfig) -> bool:
        """Whether this is the model as ``config`` would load it here: same batch size,
        same precision, same Keras backend."""
        import keras

        settings = run_settings(config, gpu=self.device == "gpu")
        return settings == (self.batch_size, self.mixed_precision) and (
            self.backend == keras.backend.backend()
        )

    def predict_members(self, images: np.ndarray) -> np.ndarray:
        """p_CNN of every network, shape (K, N) float32, of images already normalised to
        [0, 255], shape (N, H, W) (or (N, H, W, B)).

        Safe to call from several threads: the calls take turns on the networks, while the
        threads' reading and normalising go on in parallel.
        """
        from lensdask.nn.evaluate import predict_images

        with self.lock:
            return np.stack(
                [predict_images(model, images, batch_size=self.batch_size) for model in self.models]
            )

    def combine(self, members: np.ndarray) -> np.ndarray:
        """The model's p_CNN from :meth:`predict_members`' scores: a committee's
        combination, or the one network's scores."""
        from lensdask.nn.evaluate import combine_scores

        return members[0] if self.combination is None else combine_scores(members, self.combination)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """p_CNN of images already normalised to [0, 255], shape (N, H, W), float32 (a
        committee's combined score)."""
        return self.combine(self.predict_members(images))


def prepare_backend(*, threads: int | None = None) -> bool:
    """Set the Keras backend up for scoring in this process; True when it uses a GPU.

    Must run before the backend is first imported to take full effect
    (:data:`lensdask.devices.BACKEND_ENV`: TensorFlow's oneDNN kernels, JAX without
    pre-allocating the GPU's memory) and sets ``threads`` CPU threads per operation (a
    worker's threads; at least 2, see below). Where the backend is already running, what it
    set stays.
    """
    set_backend_env()
    import keras

    from lensdask.devices import enable_memory_growth, has_gpu

    backend = keras.backend.backend()
    if threads and backend == "tensorflow":
        import tensorflow as tf

        # At least 2: TF 2.21 with oneDNN and a single intra-op thread crashes (segfault,
        # heap corruption) when the same process later trains a model, as a worker that
        # scored and is then given the training task would.
        with contextlib.suppress(RuntimeError):  # already initialised
            tf.config.threading.set_intra_op_parallelism_threads(max(threads, 2))
            tf.config.threading.set_inter_op_parallelism_threads(max(threads, 2))
    elif threads and backend == "torch":
        import torch

        torch.set_num_threads(threads)
    enable_memory_growth()
    return has_gpu()


def run_settings(config: ScoreConfig, *, gpu: bool) -> tuple[int, bool]:
    """Batch size (images per model call) and mixed precision of a model loaded with
    ``config`` on a GPU (``gpu``) or a CPU: the configuration's values, or the device's
    defaults where it leaves them open."""
    batch = config.batch_size or (GPU_BATCH if gpu else CPU_BATCH)
    mixed = gpu if config.mixed_precision is None else config.mixed_precision
    return batch, bool(mixed)


def load_resident(
    model_dir: str | Path,
    model_id: str,
    *,
    config: ScoreConfig | None = None,
    threads: int | None = None,
) -> ResidentModel:
    """The resident model ``model_id`` of this process, loading it the first time and
    again when ``config`` asks for another batch size or precision than it was loaded with.

    Parameters
    ----------
    model_dir : path
        The model directory (``model.keras`` + ``card.json``).
    model_id : str
        The id the caller planned with; a model directory whose card now says otherwise
        (retrained or damaged since) is refused.
    config : ScoreConfig, optional
        Batch size and mixed precision.
    threads : int, optional
        CPU threads for the backend (a worker's ``nthreads``).

    Raises
    ------
    lensdask.formats.model_dir.ModelError
        If the model is missing, damaged or not ``model_id``.
    """
    config = config or ScoreConfig()
    with _LOCK:
        resident = MODELS.get(model_id)
        if resident is None or not resident.runs_as(config):
            resident = _load(Path(model_dir), model_id, config, threads)
            MODELS[model_id] = resident
            LOADS[model_id] += 1
        return resident


def _load(model_dir: Path, model_id: str, config: ScoreConfig, threads: int | None):
    gpu = prepare_backend(threads=threads)
    import keras

    from lensdask.formats.model_dir import ModelError, is_committee, load_model, read_card
    from lensdask.nn.model import precision_policy

    card = read_card(model_dir)
    places = (
        [model_dir / member["path"] for member in card["committee"]["members"]]
        if is_committee(card)
        else [model_dir]
    )
    # The models as saved (their layers keep their own dtype policies), whatever policy
    # this thread holds: the check for float32 models below reads their own policies.
    with precision_policy(mixed=False):
        loaded = [load_model(place) for place in places]
    if card["model_id"] != model_id:
        raise ModelError(
            f"{model_dir}: holds model {card['model_id']}, not {model_id} that this run "
            "was planned with (retrained since?)"
        )
    batch, mixed = run_settings(config, gpu=gpu)
    models = []
    for model, model_card in loaded:
        if mixed and model.dtype_policy.name == "float32":
            model = _mixed_copy(model, model_card)
        # compile the one batch shape now, so that no task pays for it
        model.predict_on_batch(np.zeros((batch, *card["input_shape"]), dtype=np.float32))
        models.append(model)
    logger.info(
        "model %s (%d network%s) resident on %s (batch %d, mixed precision %s)",
        model_id,
        len(models),
        "s" if len(models) > 1 else "",
        "GPU" if gpu else "CPU",
        batch,
        mixed,
    )
    return ResidentModel(
        models=tuple(models),
        card=card,
        device="gpu" if gpu else "cpu",
        batch_size=batch,
        mixed_precision=mixed,
        backend=keras.backend.backend(),
    )


def _mixed_copy(model: Any, card: dict[str, Any]) -> Any:
    """The same network built under the ``mixed_float16`` policy, with ``model``'s weights."""
    from lensdask.nn.model import build_resnet18, precision_policy

    arch = card["architecture"]
    with precision_policy(mixed=True):
        # Any seed: the weights are replaced below, and without one Keras' initialisers
        # would draw their seeds from Python's global `random`.
        mixed = build_resnet18(
            input_shape=tuple(arch["input_shape"]), width=arch["width"], name=arch["name"], seed=0
        )
    mixed.set_weights(model.get_weights())
    return mixed


class ModelPlugin(WorkerPlugin):
    """Dask worker plugin: load a model on every worker when scoring starts (and on
    workers that join later), so that no task waits for it and none carries it.

    Register with ``client.register_plugin(ModelPlugin(...))``; its ``name`` is fixed by
    the model id, so registering it again replaces it instead of adding a second one. The
    model stays on the worker until the worker process ends.
    """

    def __init__(self, model_dir: str | Path, model_id: str, *, config: ScoreConfig) -> None:
        self.model_dir = str(model_dir)
        self.model_id = model_id
        self.config = config
        self.name = f"lensdask-model-{model_id}"

    async def setup(self, worker: Any) -> None:
        """Load the model in the worker's thread pool (not on its event loop)."""
        import asyncio

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None,
            lambda: load_resident(
                self.model_dir, self.model_id, config=self.config, threads=worker.state.nthreads
            ),
        )


def worker_threads() -> int | None:
    """The number of threads of the Dask worker running this code (None outside workers)."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except ValueError:
        return None
