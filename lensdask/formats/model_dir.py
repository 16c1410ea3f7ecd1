"""The model directory: ``model.keras`` plus ``card.json``, written and loaded safely.

``card.json`` holds what scoring and users need to trust a model: the architecture, input
shape, its ``bands`` (the cutout bands of its input channels, in order; ``band`` the one its
arcs' brightness was set in; cards without ``bands`` take ``band`` alone), the
normalisation its inputs went through (:func:`lensdask.normalise.normalisation_name`:
``minmax-255`` for one band, ``minmax-255-per-band`` or ``minmax-255-joint`` for several),
the training configuration and seed, the training set it was made from, the test-set
metrics, library versions, and ``model_id``: the first 16 hex digits of the SHA-256 of
``model.keras``. Models are loaded with Keras' safe mode only (no arbitrary code).

A committee (``train.members`` > 1) is a directory of model directories::

    OUT/card.json          the committee's card: ``committee`` (``combination``, ``mean``
                           or ``median``, and ``members``: per member its ``path``,
                           ``model_id``, ``seed``, ``width`` and ``test_metrics``), the
                           committee's own ``test_metrics`` (of the combined p_CNN) and the
                           members' common input shape, bands, normalisation and pixel scale
    OUT/members/<k>/       member k: a model directory as above (model.keras, card.json,
                           its checkpoints and plots)

It has no ``model.keras`` of its own; its ``model_id`` is the first 16 hex digits of the
SHA-256 of its members' ids (one a line, in member order), so it changes when any member
does. :func:`read_card` checks either kind (a committee: every member's card and hash),
:func:`load_members` loads either as a list of networks (one for a single model).
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
MEMBERS_DIR = "members"
"""The folder of a committee's member model directories (``members/<k>``)."""


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


def committee_id(member_ids: list[str]) -> str:
    """The ``model_id`` of a committee: first 16 hex digits of the SHA-256 of its members'
    ids, one a line, in member order."""
    return hashlib.sha256("\n".join(member_ids).encode()).hexdigest()[:16]


def member_dir(model_dir: str | Path, k: int) -> Path:
    """The model directory of member ``k`` of the committee ``model_dir``."""
    return Path(model_dir) / MEMBERS_DIR / str(k)


def is_committee(card: dict[str, Any]) -> bool:
    """Whether a card is a committee's."""
    return "committee" in card


def write_committee_card(out: str | Path, *, card: dict[str, Any]) -> str:
    """Write a committee's ``card.json`` into ``out``, its ``model_id`` made from the ids
    of ``card["committee"]["members"]`` (whose model directories must be complete).

    Returns
    -------
    str
        The committee's model id.
    """
    model_id = committee_id([member["model_id"] for member in card["committee"]["members"]])
    write_json_atomic(Path(out) / CARD_FILE, {**card, "model_id": model_id})
    return model_id


def _read_json_card(model_dir: Path) -> dict[str, Any]:
    card_path = model_dir / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"{model_dir}: not a model directory ({CARD_FILE} is missing)")
    try:
        return json.loads(card_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{card_path}: damaged card ({err})") from None


def _check_committee(model_dir: Path, card: dict[str, Any]) -> dict[str, Any]:
    """A committee's card, once every member's card and file hash agree with it."""
    members = card["committee"].get("members") or []
    if not members:
        raise ModelError(f"{model_dir / CARD_FILE}: a committee without members")
    for k, member in enumerate(members):
        found = read_card(model_dir / member["path"])
        if found["model_id"] != member["model_id"]:
            raise ModelError(
                f"{model_dir / member['path']}: member {k} is model {found['model_id']}, the "
                f"committee's card lists {member['model_id']!r}: retrained or replaced since"
            )
    if card.get("model_id") != committee_id([member["model_id"] for member in members]):
        raise ModelError(
            f"{model_dir / CARD_FILE}: model_id {card.get('model_id')!r} is not the hash of "
            "its members' ids: the card was changed or damaged"
        )
    return card


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """The card of a model directory, checked against its model file's hash (a committee:
    against each member's card and hash)."""
    model_dir = Path(model_dir)
    model_path = model_dir / MODEL_FILE
    card = _read_json_card(model_dir)
    if is_committee(card):
        return _check_committee(model_dir, card)
    if not model_path.is_file():
        raise ModelError(f"{model_dir}: not a model directory ({MODEL_FILE} is missing)")
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
    if is_committee(card):
        raise ModelError(
            f"{model_dir}: a committee of {len(card['committee']['members'])} networks, not "
            "one model: load its members (load_members)"
        )
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


def load_members(
    model_dir: str | Path, *, input_shape: tuple[int, ...] | None = None
) -> tuple[list[Any], dict[str, Any]]:
    """Load every network of a model directory: a committee's members in order, or the one
    model of a single-network directory (:func:`load_model` each).

    Returns
    -------
    models : list of keras.Model
    card : dict
        The directory's card (the committee's, for a committee).
    """
    card = read_card(model_dir)
    if not is_committee(card):
        model, _ = load_model(model_dir, input_shape=input_shape)
        return [model], card
    models = [
        load_model(Path(model_dir) / member["path"], input_shape=input_shape)[0]
        for member in card["committee"]["members"]
    ]
    return models, card
