"""The model directory: ``model.keras`` plus ``card.json``, written and loaded safely.

``card.json`` holds what scoring and users need to trust a model: the architecture, input
shape, the normalisation its inputs went through (:data:`lensdask.normalise.NORMALISATION`),
the training configuration and seed, the training set it was made from, the test-set
metrics, library versions, and ``model_id``: the first 16 hex digits of the SHA-256 of
``model.keras``. Models are loaded with Keras' safe mode only (no arbitrary code).
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

from lensdask.formats.files import atomic_path, write_json_atomic

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"


class ModelError(ValueError):
    """A model directory is missing, damaged, or does not fit the data."""


def file_hash(path: Path) -> str:
    """First 16 hex digits of the SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model depends on, and the Keras backend."""
    import keras
    import numpy as np

    from lensdask import __version__

    backend = keras.backend.backend()
    versions = {
        "lensdask": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "keras": keras.__version__,
        "keras_backend": backend,
    }
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if module:
        versions[module] = __import__(module).__version__
    return versions


def save_model(model: Any, path: Path) -> None:
    """Save a Keras model atomically: a temporary ``.keras`` file, then a rename."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def write_model_dir(model: Any, out: str | Path, *, card: dict[str, Any]) -> str:
    """Write ``model.keras`` then ``card.json`` (with ``model_id``) into ``out``.

    Returns
    -------
    str
        The model id.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out / MODEL_FILE)
    model_id = file_hash(out / MODEL_FILE)
    write_json_atomic(out / CARD_FILE, {**card, "model_id": model_id})
    return model_id


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """The card of a model directory, checked against its model file's hash."""
    model_dir = Path(model_dir)
    card_path, model_path = model_dir / CARD_FILE, model_dir / MODEL_FILE
    for path in (card_path, model_path):
        if not path.is_file():
            raise ModelError(f"{model_dir}: not a model directory ({path.name} is missing)")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{card_path}: damaged card ({err})") from None
    if card.get("model_id") != file_hash(model_path):
        raise ModelError(
            f"{model_path}: its hash does not match card.json's model_id "
            f"{card.get('model_id')!r}: the file was changed or damaged"
        )
    return card


def load_model(
    model_dir: str | Path, *, input_shape: tuple[int, ...] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Load a model directory with Keras' safe mode.

    Parameters
    ----------
    model_dir : path
        Holds ``model.keras`` and ``card.json``.
    input_shape : tuple of int, optional
        The shape of one input the caller will feed (e.g. ``(101, 101, 1)``); a model made
        for another shape is refused.

    Returns
    -------
    model : keras.Model
    card : dict

    Raises
    ------
    ModelError
        If a file is missing or damaged, or the input shape does not fit.
    """
    import keras

    card = read_card(model_dir)
    path = Path(model_dir) / MODEL_FILE
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:  # Keras raises many types for damaged archives
        raise ModelError(f"{path}: cannot be loaded as a Keras model: {err}") from None
    model_shape = tuple(model.input_shape[1:])
    if tuple(card.get("input_shape", model_shape)) != model_shape:
        raise ModelError(f"{path}: input shape {model_shape} differs from its card's")
    if input_shape is not None and tuple(input_shape) != model_shape:
        raise ModelError(
            f"{path}: the model takes inputs of shape {model_shape}, the data has "
            f"{tuple(input_shape)}"
        )
    return model, card
