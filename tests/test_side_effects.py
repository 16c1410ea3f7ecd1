"""Library functions leave the process's global state as they found it: matplotlib's
backend, Keras' dtype policy, NumPy's and Python's global random states (a Dask worker
runs many tasks, of many stages, in one process)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from lensdask.config import ScoreConfig
from lensdask.testing import global_state, write_untrained_model

keras = pytest.importorskip("keras")


@pytest.fixture
def pdf_backend():
    """matplotlib's backend set to ``pdf`` (not the ``agg`` that plotting code would pick)
    for one test."""
    import matplotlib

    previous = matplotlib.get_backend()
    matplotlib.use("pdf")
    yield
    matplotlib.use(previous)


@pytest.fixture
def bfloat16_policy():
    """Keras' dtype policy set to ``mixed_bfloat16`` (neither of lensdask's) for one test."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(previous)


def test_plots_keep_the_backend_and_random_states(pdf_backend, tmp_path):
    from lensdask.nn.evaluate import plot_histograms, plot_roc
    from lensdask.score.figures import plot_p_cnn
    from lensdask.selection import plot_completeness

    labels = np.repeat([0, 1], 20)
    scores = np.random.default_rng(0).random(40)
    bins = pd.DataFrame(
        {
            "quantity": ["theta_E", "theta_E", "arc_peak_ratio"],
            "low": [1.0, 2.0, 0.02],
            "high": [2.0, 5.0, 0.3],
            "scored": [3, 4, 5],
            "completeness": [0.5, 1.0, 0.8],
        }
    )
    before = global_state()
    plot_roc(labels, scores, tmp_path / "roc.png", title="roc")
    plot_histograms(labels, scores, tmp_path / "hist.png", title="hist")
    edges = np.linspace(0, 1, 11)
    plot_p_cnn(edges, {"LRG": np.arange(10), "BG": np.ones(10)}, {"LRG": 0.75}, tmp_path / "p.png")
    plot_completeness(bins, tmp_path / "completeness.png")
    assert global_state() == before
    for name in ("roc", "hist", "p", "completeness"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_precision_policy_restores_the_policy_it_found(bfloat16_policy):
    from lensdask.nn.model import precision_policy

    with precision_policy(mixed=True):
        assert keras.config.dtype_policy().name == "mixed_float16"
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    with pytest.raises(RuntimeError), precision_policy(mixed=False):
        assert keras.config.dtype_policy().name == "float32"
        raise RuntimeError
    assert keras.config.dtype_policy().name == "mixed_bfloat16"


@pytest.fixture
def model_dir(tmp_path):
    """A tiny untrained model directory (float32)."""
    return write_untrained_model(tmp_path / "model", seed=3)


def test_loading_a_model_in_mixed_precision_keeps_the_global_state(
    model_dir, bfloat16_policy, monkeypatch
):
    from lensdask.formats.model_dir import read_card
    from lensdask.score import resident

    monkeypatch.setattr(resident, "MODELS", {})
    monkeypatch.setattr(resident, "LOADS", Counter())
    model_id = read_card(model_dir)["model_id"]
    before = global_state()
    loaded = resident.load_resident(
        model_dir, model_id, config=ScoreConfig(batch_size=2, mixed_precision=True)
    )
    assert global_state() == before
    assert loaded.model.dtype_policy.name == "mixed_float16"
