"""Three-band inputs through the whole chain: training set, training, model card, scoring.

The scores are checked against the model loaded here with Keras on the cutouts read with
zarr and normalised as the card says.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from lensdask.config import SimulateConfig, TrainConfig
from lensdask.formats.model_dir import ModelError, load_model
from lensdask.lensing.simulate import simulate_lenses
from lensdask.nn.train import train_model
from lensdask.normalise import normalise_bands
from lensdask.score.scoring import score_cutouts
from lensdask.testing import write_cutout_store

BANDS = ("g", "r", "i")
SIZE = 45
TILES = {"KIDS_1.0_0.5": {"LRG": 24, "BG": 6}, "KIDS_2.0_0.5": {"LRG": 16, "BG": 6}}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["per-band", "joint"])
def test_three_band_training_and_scoring(tmp_path: Path, client, mode: str) -> None:
    store = write_cutout_store(tmp_path / "cutouts.zarr", TILES, size=SIZE, bands=BANDS, seed=2)
    config = SimulateConfig(
        bands=BANDS,
        normalise=mode,
        positives=32,
        negatives=24,
        test_positives=8,
        test_negatives=8,
        negative_mix={"LRG": 0.5, "BG": 0.5},
        batch_size=16,
        seed=1,
    )
    trainset = tmp_path / "trainset.zarr"
    report = simulate_lenses(store, trainset, config=config, client=client, progress=False)
    assert report.units.ok, report.units.failures
    root = zarr.open_group(str(trainset), mode="r")
    assert root.attrs["bands"] == list(BANDS)
    assert root.attrs["normalisation"] == f"minmax-255-{mode}"
    images = root["train/images"][:]
    assert images.shape[1:] == (SIZE, SIZE, 3)
    assert images.min() >= 0 and images.max() <= 255
    assert "src_g_r" in root["train/params"].attrs["columns"]

    model_dir = tmp_path / "model"
    train = TrainConfig(
        width=0.0625, batch_size=16, epochs=1, augment=True, mixed_precision=False, seed=0
    )
    card = train_model(trainset, model_dir, config=train, progress=False).card
    assert card["bands"] == list(BANDS)
    assert card["input_shape"] == [SIZE, SIZE, 3]
    assert card["normalisation"] == f"minmax-255-{mode}"

    scores = score_cutouts(store, model_dir, tmp_path / "scores", client=client, progress=False)
    assert scores.units.ok, scores.units.failures
    table = pd.concat(
        pd.read_parquet(path) for path in sorted((tmp_path / "scores").glob("*.parquet"))
    )
    assert len(table) == sum(sum(kinds.values()) for kinds in TILES.values())
    assert np.isfinite(table["p_cnn"]).all()
    # the same p_cnn from the model loaded here, on the cutouts normalised as the card says
    model, _ = load_model(model_dir, input_shape=(SIZE, SIZE, 3))
    tile = next(iter(TILES))
    group = zarr.open_group(str(store / tile), mode="r")
    stack = np.stack([group[band][:] for band in BANDS], axis=-1)
    expected = np.asarray(model.predict_on_batch(normalise_bands(stack, mode=mode)))[:, 0]
    mine = pd.read_parquet(tmp_path / "scores" / f"{tile}.parquet")
    np.testing.assert_allclose(mine["p_cnn"].to_numpy(), expected, atol=1e-5)

    two_bands = write_cutout_store(tmp_path / "gr.zarr", TILES, size=SIZE, bands=("g", "r"))
    with pytest.raises(ModelError, match=r"without i"):
        score_cutouts(two_bands, model_dir, tmp_path / "gr-scores", client=client, progress=False)
