"""Training leaves the process's global state as it found it: it seeds only its own random
draws and scopes Keras' dtype policy (a Dask worker runs other tasks afterwards)."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from lensdask.testing import global_state

keras = pytest.importorskip("keras")


def test_training_keeps_the_global_state(trainset, tiny_config, tmp_path):
    from lensdask.nn.train import fit_model

    config = dataclasses.replace(tiny_config, epochs=1, seed=11)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")  # neither of the policies training sets
    try:
        np.random.seed(123)
        random.seed(456)
        before = global_state()
        fit_model(trainset, tmp_path / "model", config=config)
        after = global_state()
    finally:
        keras.config.set_dtype_policy(previous)
    assert after == before
