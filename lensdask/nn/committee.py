"""Committees of networks: ``train.members`` ResNet-18s trained independently, scored and
evaluated together.

Member ``k`` is trained as a network of its own (:func:`lensdask.nn.train.fit_model`, run by
:func:`lensdask.nn.train.train_committee`) into
``OUT/members/<k>`` with seed ``train.seed + k`` and width ``train.member_widths[k]`` (or
``train.width``): one Dask task per member, on as many (GPU) workers as there are, each
resumable from its own checkpoints. When every member is complete, one more task predicts
the test split with each member, combines the scores
(:func:`lensdask.nn.evaluate.combine_scores`, the card's
``combination``), writes the committee's plots into ``OUT`` and its card
(:func:`lensdask.formats.model_dir.write_committee_card`: the members, each with its own
test metrics, and the committee's). A rerun retrains only the members that are not complete
and re-evaluates the committee only when its members changed.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from lensdask.config import TrainConfig

logger = logging.getLogger(__name__)


def member_config(config: TrainConfig, k: int) -> TrainConfig:
    """The training configuration of member ``k``: one network of seed ``seed + k`` and
    width ``member_widths[k]`` (or ``width``)."""
    width = config.member_widths[k] if config.member_widths else config.width
    return dataclasses.replace(
        config, seed=config.seed + k, width=width, members=1, member_widths=(), combination="mean"
    )


def parent_members(initial_model: str | Path | None, members: int) -> list[Path | None]:
    """The model directory each member starts from: member ``k`` of the committee
    ``initial_model`` (which must have ``members`` members), or None each (from seeds).

    Raises
    ------
    lensdask.formats.model_dir.ModelError
        If ``initial_model`` is not a committee of ``members`` members.
    """
    from lensdask.formats.model_dir import ModelError, is_committee, read_card

    if initial_model is None:
        return [None] * members
    card = read_card(initial_model)
    listed = card["committee"]["members"] if is_committee(card) else []
    if len(listed) != members:
        raise ModelError(
            f"{initial_model}: has {len(listed) or 1} network(s); a committee of {members} "
            "members starts from a committee of as many"
        )
    return [Path(initial_model) / member["path"] for member in listed]


def finish_committee(
    out: str | Path,
    *,
    config: TrainConfig,
    cards: list[dict[str, Any]],
    test_set: str | Path,
) -> dict[str, Any]:
    """Evaluate the committee of the complete members ``cards`` on the test split of
    ``test_set`` and write its plots and card into ``out`` (kept where the card already
    describes these members, combination and test set). Runs where it is called.

    Returns
    -------
    dict
        The committee's card.
    """
    from lensdask.devices import set_backend_env

    set_backend_env()
    from lensdask.formats.model_dir import (
        MEMBERS_DIR,
        ModelError,
        committee_id,
        library_versions,
        load_model,
        read_card,
        write_committee_card,
    )
    from lensdask.nn.evaluate import (
        combine_scores,
        evaluate_scores,
        predict_split,
        split_kinds,
        split_parameters,
    )

    out, test_set = Path(out), Path(test_set).resolve()
    ids = [card["model_id"] for card in cards]
    try:
        done = read_card(out)
    except ModelError:
        done = {}
    if (
        done.get("model_id") == committee_id(ids)
        and done["committee"].get("combination") == config.combination
        and done.get("data", {}).get("test_set") == str(test_set)
    ):
        logger.info("train: committee %s is complete", done["model_id"])
        return done
    scores, labels = [], None
    for k in range(len(cards)):
        model, _ = load_model(out / MEMBERS_DIR / str(k))
        labels, member_scores = predict_split(model, test_set, "test")
        scores.append(member_scores)
    combined = combine_scores(np.stack(scores), config.combination)
    metrics = evaluate_scores(
        labels,
        combined,
        out,
        title=f"committee of {len(cards)} ({config.combination}), test split of {test_set.name}",
        parameters=split_parameters(test_set, "test"),
        kinds=split_kinds(test_set, "test"),
    )
    first = cards[0]
    card = {
        "committee": {
            "combination": config.combination,
            "members": [
                {
                    "path": f"{MEMBERS_DIR}/{k}",
                    "model_id": member["model_id"],
                    "seed": member["seed"],
                    "width": member["training"]["width"],
                    "test_metrics": member["test_metrics"],
                }
                for k, member in enumerate(cards)
            ],
        },
        **{
            key: first.get(key)
            for key in ("input_shape", "normalisation", "band", "bands", "pixel_scale")
        },
        "training": {**dataclasses.asdict(config), "member_widths": list(config.member_widths)},
        "seed": config.seed,
        "data": {**first["data"], "test_set": str(test_set)},
        "test_metrics": metrics.as_dict(),
        "libraries": library_versions(),
    }
    card["model_id"] = write_committee_card(out, card=card)
    logger.info("train: committee %s of members %s", card["model_id"], ", ".join(ids))
    return card
