"""`lensdask score`: model resident per worker, scores equal to the model's own predictions,
one row per cutout, resume, and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from score_data import TILES

from lensdask.cli import main
from lensdask.config import ScoreConfig
from lensdask.formats.cutout_store import read_tile
from lensdask.formats.model_dir import ModelError, load_model, read_card
from lensdask.formats.scores import SCORE_COLUMNS
from lensdask.runner import EXIT_PARTIAL
from lensdask.score.scoring import check_scores, prefetched_chunks, score_cutouts
from lensdask.units import MARKER_DIR


def loads_on_workers(client, model_id: str) -> list[int]:
    """How many times each worker process loaded ``model_id``."""

    def count(model_id: str = model_id) -> int:
        from lensdask.score.resident import LOADS

        return LOADS[model_id]

    return list(client.run(count).values())


def direct_scores(model_dir: Path, store: Path) -> pd.DataFrame:
    """The model's predictions on every cutout, in this process, without Dask."""
    from lensdask.nn.evaluate import predict_images
    from lensdask.normalise import normalise_stamps

    model, _ = load_model(model_dir)
    frames = []
    for tile in TILES:
        cut = read_tile(store, tile, bands=("r",))
        p = predict_images(model, normalise_stamps(cut.images["r"]), batch_size=256)
        frames.append(pd.DataFrame({"ID": cut.ids.astype(object), "p_direct": p}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, client, store, model_dir):
    out = tmp_path_factory.mktemp("scores") / "scores.parquet"
    report = score_cutouts(store, model_dir, out, client=client, progress=False)
    return out, report


def test_scores_equal_the_models_own_predictions(scored, store, model_dir):
    out, report = scored
    scores = pd.read_parquet(out)
    both = scores.merge(direct_scores(model_dir, store), on="ID", how="outer", indicator=True)
    assert (both["_merge"] == "both").all()
    np.testing.assert_allclose(both["p_cnn"], both["p_direct"], rtol=0, atol=2e-6)
    assert scores["p_cnn"].std() > 0  # distinct images give distinct scores
    assert report.units.ok and report.problems == []


def test_one_row_per_cutout_with_the_contract_columns(scored, store, model_dir):
    out, report = scored
    scores = pd.read_parquet(out)
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert scores["p_cnn"].dtype == np.float32
    assert not scores["ID"].duplicated().any()
    expected_rows = sum(sum(s.values()) + 2 for s in TILES.values())  # 2 edge cutouts per tile
    assert len(scores) == report.rows == expected_rows
    assert set(scores["model_id"]) == {read_card(model_dir)["model_id"]}
    for tile in TILES:
        cut = read_tile(store, tile, bands=("r",))
        mine = pd.read_parquet(out / f"{tile}.parquet")
        assert mine["ID"].tolist() == cut.ids.astype(object).tolist()  # the store's order
        assert mine["sample"].tolist() == cut.sample.astype(object).tolist()
        assert set(mine["THELI_NAME"]) == {tile}
    per_sample = scores["sample"].value_counts().to_dict()
    assert report.per_sample == per_sample


def test_the_model_is_loaded_once_per_worker_not_per_task(
    scored, client, model_dir, store, tmp_path
):
    _, report = scored
    model_id = report.model_id
    assert len(TILES) > len(client.scheduler_info()["workers"])
    assert loads_on_workers(client, model_id) == [1, 1]
    again = score_cutouts(store, model_dir, tmp_path / "again", client=client, progress=False)
    assert again.written == len(TILES)
    assert loads_on_workers(client, model_id) == [1, 1]
    markers = [json.loads(p.read_text()) for p in (tmp_path / "again" / MARKER_DIR).glob("*")]
    assert {m["extra"]["device"] for m in markers} == {"cpu"}


def test_a_rerun_redoes_only_missing_or_damaged_tiles(client, store, model_dir, tmp_path):
    out = tmp_path / "scores.parquet"
    first = score_cutouts(store, model_dir, out, client=client, progress=False)
    before = pd.read_parquet(out).sort_values("ID", ignore_index=True)
    # an interrupted run: one tile's file never written, another's marker lost mid-commit
    (out / "KIDS_2.0_0.5.parquet").unlink()
    (out / MARKER_DIR / "KIDS_3.0_0.5.json").unlink()
    assert any("KIDS_3.0_0.5" in line for line in check_scores(out, store))
    second = score_cutouts(store, model_dir, out, client=client, progress=False)
    assert (first.written, second.written, second.skipped) == (5, 2, 3)
    assert sorted(second.units.results) == ["KIDS_2.0_0.5", "KIDS_3.0_0.5"]
    after = pd.read_parquet(out).sort_values("ID", ignore_index=True)
    pd.testing.assert_frame_equal(before, after)
    assert check_scores(out, store) == []
    third = score_cutouts(store, model_dir, out, client=client, progress=False)
    assert (third.written, third.skipped) == (0, 5)


def test_another_model_rescores_every_tile(client, store, tmp_path):
    from lensdask.testing import write_untrained_model

    out = tmp_path / "scores.parquet"
    one = write_untrained_model(tmp_path / "one", seed=1)
    two = write_untrained_model(tmp_path / "two", seed=2)
    score_cutouts(store, one, out, client=client, progress=False)
    report = score_cutouts(store, two, out, client=client, progress=False)
    assert report.written == len(TILES)
    assert set(pd.read_parquet(out)["model_id"]) == {read_card(two)["model_id"]}


def test_a_tile_cut_after_scoring_is_reported_missing(client, store, model_dir, tmp_path):
    from lensdask.testing import write_cutout_store

    local = tmp_path / "cutouts.zarr"
    shutil.copytree(store, local)
    out = tmp_path / "scores.parquet"
    score_cutouts(local, model_dir, out, client=client, progress=False)
    # a later run of the cutouts adds a tile (and records it in the store's manifest)
    write_cutout_store(local, {"KIDS_9.0_0.5": {"LRG": 3}}, bands=("r", "g"))
    assert check_scores(out, local) == ["KIDS_9.0_0.5: not scored (3 cutouts)"]
    report = score_cutouts(local, model_dir, out, client=client, progress=False)
    assert report.written == 1 and report.problems == []


def test_a_model_for_another_band_or_size_is_refused(client, store, tmp_path):
    from lensdask.testing import write_untrained_model

    i_band = write_untrained_model(tmp_path / "i", band="i")
    with pytest.raises(ModelError, match=r"trained on the i band.*\['r', 'g'\]"):
        score_cutouts(store, i_band, tmp_path / "s", client=client, progress=False)
    small = write_untrained_model(tmp_path / "small", size=51)
    with pytest.raises(ModelError, match=r"\[51, 51\] px stamps.*101x101"):
        score_cutouts(store, small, tmp_path / "s", client=client, progress=False)


def test_a_model_trained_on_other_normalisation_is_refused(client, store, tmp_path):
    import json

    from lensdask.formats.model_dir import CARD_FILE
    from lensdask.testing import write_untrained_model

    other = write_untrained_model(tmp_path / "other")
    card = json.loads((other / CARD_FILE).read_text())
    card["normalisation"] = "zscale"
    (other / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="normalised by 'zscale'; this lensdask applies"):
        score_cutouts(store, other, tmp_path / "s", client=client, progress=False)


def test_a_model_changed_since_planning_is_refused(model_dir, tmp_path):
    from lensdask.score.resident import load_resident

    with pytest.raises(ModelError, match="not 0123456789abcdef"):
        load_resident(model_dir, "0123456789abcdef")


def test_an_empty_store_is_an_error(client, model_dir, tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete tile"):
        score_cutouts(tmp_path / "empty.zarr", model_dir, tmp_path / "s", client=client)


def test_prefetched_chunks_cover_the_array_in_order():
    data = np.arange(1000).reshape(250, 4)
    parts = list(prefetched_chunks(data, 64))
    assert [start for start, _ in parts] == [0, 64, 128, 192]
    np.testing.assert_array_equal(np.concatenate([chunk for _, chunk in parts]), data)
    assert list(prefetched_chunks(data[:0], 64)) == []


def test_mixed_precision_scores_agree_with_float32(model_dir, store):
    from lensdask.normalise import normalise_stamps
    from lensdask.score.resident import _load

    card = read_card(model_dir)
    images = normalise_stamps(read_tile(store, "KIDS_5.0_0.5", bands=("r",)).images["r"])
    full = _load(model_dir, card["model_id"], ScoreConfig(mixed_precision=False), None)
    mixed = _load(model_dir, card["model_id"], ScoreConfig(mixed_precision=True), None)
    assert full.model.dtype_policy.name == "float32"
    assert mixed.model.dtype_policy.name == "mixed_float16" and mixed.mixed_precision
    np.testing.assert_allclose(mixed.predict(images), full.predict(images), atol=2e-2)


def test_score_command_prints_counts_and_exit_status(client, store, model_dir, tmp_path):
    address = client.scheduler.address
    out = tmp_path / "scores.parquet"
    args = ["score", str(store), "--model", str(model_dir), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--cluster", address, "--no-progress"])
    assert result.exit_code == 0, result.output
    n = sum(sum(s.values()) + 2 for s in TILES.values())
    assert f"score: {n} cutouts scored now" in result.output
    assert f"-> {out}" in result.output
    report = (tmp_path / "scores_performance.html").read_text()  # next to the output
    assert "Dask Performance Report" in report and "score" in report
    # a tile whose cutouts are damaged fails alone: exit 3, the others complete
    local = tmp_path / "cutouts.zarr"
    shutil.copytree(store, local)
    shutil.rmtree(local / "KIDS_4.0_0.5" / "r")
    args = ["score", str(local), "--model", str(model_dir), "--out", str(tmp_path / "s2")]
    result = CliRunner().invoke(main, [*args, "--cluster", address, "--no-progress"])
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "FAILED score KIDS_4.0_0.5" in result.output
    assert "MISSING KIDS_4.0_0.5: not scored" in result.output
    # the command keeps each model's scores in a folder of its own
    assert len(list((tmp_path / "s2").glob("*/*.parquet"))) == len(TILES) - 1


@pytest.mark.slow
def test_workers_that_scored_can_then_train(client, store, model_dir, tmp_path):
    # a resident model sets the worker's TensorFlow threads; training in the same process
    # afterwards must still work (it crashed TF 2.21 with one intra-op thread)
    from lensdask.config import SimulateConfig, TrainConfig
    from lensdask.lensing.simulate import simulate_lenses
    from lensdask.nn.train import train_model

    report = score_cutouts(store, model_dir, tmp_path / "scores", client=client, progress=False)
    assert loads_on_workers(client, report.model_id) == [1, 1]
    sim = SimulateConfig(
        positives=32,
        negatives=16,
        test_positives=8,
        test_negatives=8,
        negative_mix={"LRG": 0.5, "BG": 0.5},
        batch_size=16,
        seed=2,
    )
    simulate_lenses(store, tmp_path / "trainset.zarr", config=sim, client=client, progress=False)
    config = TrainConfig(width=0.0625, epochs=1, batch_size=16, augment=False)
    trained = train_model(
        tmp_path / "trainset.zarr", tmp_path / "model", config=config, client=client, progress=False
    )
    assert trained.card["training"]["epochs_run"] == 1
    assert 0.0 <= trained.card["test_metrics"]["auc"] <= 1.0
    assert loads_on_workers(client, report.model_id) == [1, 1]  # no worker was lost
