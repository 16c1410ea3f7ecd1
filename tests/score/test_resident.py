"""The resident model of a process: loaded once for a batch size and precision, and again
when a later run asks for others."""

from __future__ import annotations

import pytest

from lensdask.config import ScoreConfig
from lensdask.formats.model_dir import read_card

pytest.importorskip("keras")


@pytest.fixture
def fresh(monkeypatch):
    """This process's resident models and load counts, emptied for one test."""
    from collections import Counter

    from lensdask.score import resident

    monkeypatch.setattr(resident, "MODELS", {})
    monkeypatch.setattr(resident, "LOADS", Counter())
    return resident


def test_the_same_settings_find_the_resident_model(fresh, model_dir):
    model_id = read_card(model_dir)["model_id"]
    config = ScoreConfig(batch_size=8, mixed_precision=False)
    first = fresh.load_resident(model_dir, model_id, config=config)
    assert fresh.load_resident(model_dir, model_id, config=config) is first
    assert fresh.LOADS[model_id] == 1


def test_another_batch_size_or_precision_loads_the_model_again(fresh, model_dir):
    model_id = read_card(model_dir)["model_id"]
    first = fresh.load_resident(
        model_dir, model_id, config=ScoreConfig(batch_size=8, mixed_precision=False)
    )
    assert (first.batch_size, first.mixed_precision) == (8, False)

    smaller = fresh.load_resident(
        model_dir, model_id, config=ScoreConfig(batch_size=4, mixed_precision=False)
    )
    assert (smaller.batch_size, smaller.mixed_precision) == (4, False)
    assert smaller.model.dtype_policy.name == "float32"

    mixed = fresh.load_resident(
        model_dir, model_id, config=ScoreConfig(batch_size=4, mixed_precision=True)
    )
    assert (mixed.batch_size, mixed.mixed_precision) == (4, True)
    assert mixed.model.dtype_policy.name == "mixed_float16"
    assert fresh.MODELS[model_id] is mixed and fresh.LOADS[model_id] == 3
