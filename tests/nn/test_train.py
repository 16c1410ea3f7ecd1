"""The training job on a tiny real training set: learning, checkpoints and resume, the Dask
task, the saved model and its card.

Every run trains a ResNet-18 of width 1/16 for 1 to 3 epochs on 101 examples; most of the
cost of a run is Keras tracing its train step. The references: the uninterrupted run
(``trained``, conftest.py) for resumed runs; metrics recomputed from the reloaded model for
the card; the training set's own attributes for the card's provenance.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from lensdask.config import TrainConfig
from lensdask.nn.train import learning_rate, read_state, train_model, training_hash
from lensdask.normalise import NORMALISATION

keras = pytest.importorskip("keras")

STEPS = 101 // 16
"""Training steps per epoch of the tiny set (the last partial batch is dropped)."""


def history(out: Path) -> list[dict[str, float]]:
    with open(out / "history.csv", newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def weights(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path, safe_mode=True).get_weights()


def checkpoint(out: Path, which: str) -> Path:
    """The checkpoint file of the ``last`` or ``best`` epoch, as the state names it."""
    return out / "checkpoints" / read_state(out)[which]


def optimizer_steps(path: Path) -> int:
    return int(keras.saving.load_model(path, safe_mode=True).optimizer.iterations.numpy())


def assert_close_rows(rows, reference) -> None:
    assert [row.keys() for row in rows] == [row.keys() for row in reference]
    for row, ref in zip(rows, reference, strict=True):
        np.testing.assert_allclose(list(row.values()), list(ref.values()), rtol=1e-5, atol=1e-7)


# --- one uninterrupted in-process run (the `trained` fixture) -----------------------------


def test_training_reduces_the_loss(trained):
    rows = history(trained.out)
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05
    assert rows[-1]["accuracy"] > rows[0]["accuracy"]
    state = read_state(trained.out)
    assert state["epoch"] == 2 and state["history"] == rows
    assert optimizer_steps(checkpoint(trained.out, "last")) == 3 * STEPS


def cosine_rate(step: int, *, peak: float, warmup: int, total: int) -> float:
    """The warm-up and cosine schedule written out by hand."""
    if step < warmup:
        return peak / 10 + (peak - peak / 10) * step / warmup
    progress = min(step - warmup, total - warmup) / (total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * progress)))


def test_cosine_schedule_warms_up_then_decays_to_a_hundredth():
    config = TrainConfig(epochs=4, warmup=0.5, learning_rate=2e-3)
    schedule = learning_rate(config, 10)
    steps = np.arange(0, 46)
    rates = [float(keras.ops.convert_to_numpy(schedule(int(step)))) for step in steps]
    expected = [cosine_rate(int(s), peak=2e-3, warmup=5, total=40) for s in steps]
    np.testing.assert_allclose(rates, expected, rtol=1e-5)
    assert rates[0] == pytest.approx(2e-4) and max(rates) == pytest.approx(2e-3)
    assert rates[40] == rates[45] == pytest.approx(2e-5)
    no_warmup = learning_rate(dataclasses.replace(config, warmup=0), 10)
    assert float(keras.ops.convert_to_numpy(no_warmup(0))) == pytest.approx(2e-3)
    assert learning_rate(dataclasses.replace(config, schedule="plateau"), 10) == 2e-3


def test_the_history_logs_the_scheduled_rate(trained):
    config = trained.config
    rows = history(trained.out)
    expected = [
        cosine_rate(
            (row["epoch"] + 1) * STEPS,
            peak=config.learning_rate,
            warmup=round(config.warmup * STEPS),
            total=config.epochs * STEPS,
        )
        for row in rows
    ]
    np.testing.assert_allclose([row["learning_rate"] for row in rows], expected, rtol=1e-5)


def test_plateau_schedule_halves_the_rate_after_each_epoch_without_improvement(
    trainset, tiny_config, tmp_path
):
    config = dataclasses.replace(
        tiny_config, schedule="plateau", lr_patience=1, learning_rate=3e-3, epochs=3
    )
    out = tmp_path / "model"
    train_model(trainset, out, config=config, progress=False)
    rate, best = config.learning_rate, float("inf")
    for row in history(out):
        # The logged rate is the one the epoch trained with; a halving acts on the next.
        assert row["learning_rate"] == pytest.approx(rate, rel=1e-6)
        if row["val_loss"] < best:
            best = row["val_loss"]
        else:
            rate /= 2
    assert rate < config.learning_rate  # the rule was exercised, not only never triggered


def test_without_a_client_it_trains_in_this_process(trained):
    epochs = [r for r in trained.records if r.getMessage().startswith("train: epoch")]
    assert len(epochs) == trained.config.epochs
    assert {r.process for r in epochs} == {os.getpid()}


def test_card_describes_the_model_and_its_data(trained, trainset):
    from lensdask.formats.model_dir import file_hash, load_model
    from lensdask.nn.model import architecture

    card = json.loads((trained.out / "card.json").read_text())
    assert card == trained.card
    attrs = dict(zarr.open_group(str(trainset), mode="r").attrs)
    model, _ = load_model(trained.out)
    assert card["model_id"] == file_hash(trained.out / "model.keras")
    assert card["architecture"] == architecture(model)
    assert card["architecture"]["width"] == 0.0625
    assert card["input_shape"] == [101, 101, 1]
    assert card["normalisation"] == NORMALISATION
    training = card["training"]
    assert training["seed"] == card["seed"] == 0
    assert training["width"] == 0.0625 and training["batch_size"] == 16
    assert training["epochs_run"] == 3 and training["mixed_precision"] is False
    state = read_state(trained.out)
    assert training["best_epoch"] == state["best_epoch"] + 1
    assert training["best_val_loss"] == min(row["val_loss"] for row in state["history"])
    assert card["data"]["plan_hash"] == attrs["plan_hash"]
    assert card["data"]["config_hash"] == attrs["config"]
    assert card["data"]["trainset"] == str(trainset.resolve())
    labels = zarr.open_group(str(trainset / "test"), mode="r")["label"][:]
    metrics = card["test_metrics"]
    assert 0 <= metrics["auc"] <= 1
    assert metrics["positives"] == int(labels.sum()) == 16
    assert metrics["negatives"] == int((labels == 0).sum()) == 16
    assert [rate["threshold"] for rate in metrics["rates"]] == [0.25, 0.5, 0.75]
    assert card["libraries"]["keras"] == keras.__version__
    assert card["libraries"]["keras_backend"] == keras.backend.backend()
    for name in ("roc.png", "p_cnn_test.png", "history.csv"):
        assert (trained.out / name).stat().st_size > 0


def test_saved_model_reproduces_the_card_metrics(trained, trainset):
    from lensdask.formats.model_dir import load_model
    from lensdask.formats.trainset import read_table
    from lensdask.nn.evaluate import classifier_metrics, predict_split

    model, card = load_model(trained.out, input_shape=(101, 101, 1))
    labels, scores = predict_split(model, trainset, "test")
    table = read_table(trainset, "test")
    parameters = {name: table[name].to_numpy() for name in ("theta_E", "arc_peak_ratio")}
    assert (
        classifier_metrics(labels, scores, parameters=parameters).as_dict()
        == (card["test_metrics"])
    )
    assert set(card["test_metrics"]["auc_by_bin"]) == {"theta_E", "arc_peak_ratio"}
    best, _ = load_model(trained.out)
    for a, b in zip(best.get_weights(), weights(checkpoint(trained.out, "best")), strict=True):
        np.testing.assert_array_equal(a, b)


# --- resume ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resumed(trained, trainset, tmp_path_factory) -> Path:
    """The directory `trained` left after its first epoch, trained again to 3 epochs."""
    out = tmp_path_factory.mktemp("resumed") / "model"
    shutil.copytree(trained.after_epoch_1, out)
    train_model(trainset, out, config=trained.config, progress=False)
    return out


def test_a_rerun_resumes_where_the_run_stopped(resumed, trained):
    stopped = trained.after_epoch_1
    first = history(stopped)
    assert len(first) == 1 and read_state(stopped)["epoch"] == 0
    assert not (stopped / "model.keras").exists()
    rows = history(resumed)
    assert len(rows) == 3 and rows[0] == first[0]
    state = read_state(resumed)
    assert state["epoch"] == 2 and state["config_hash"] == read_state(stopped)["config_hash"]
    # From the checkpoint, not from scratch: Adam's step count went on from 1 epoch.
    assert optimizer_steps(checkpoint(stopped, "last")) == STEPS
    assert optimizer_steps(checkpoint(resumed, "last")) == 3 * STEPS
    # Same batches in the same order as the uninterrupted run: same history, same weights.
    assert_close_rows(rows, history(trained.out))
    final = weights(checkpoint(resumed, "last"))
    reference = weights(checkpoint(trained.out, "last"))
    for a, b in zip(final, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --- a changed configuration, on a Dask worker ----------------------------------------------


@pytest.fixture(scope="module")
def on_worker(trained, trainset, tiny_config, client, tmp_path_factory):
    """The directory `trained` left after its first epoch, rerun with another learning rate
    as a Dask task of the session's cluster."""
    from distributed import get_task_stream

    out = tmp_path_factory.mktemp("on-worker") / "model"
    shutil.copytree(trained.after_epoch_1, out)
    config = dataclasses.replace(tiny_config, learning_rate=3e-3, epochs=1)
    with get_task_stream(client=client) as stream:
        report = train_model(trainset, out, config=config, client=client, progress=False)
    return out, config, report, stream.data


def test_with_a_client_it_trains_as_one_task_on_a_worker(on_worker, client):
    out, config, report, tasks = on_worker
    train = [task for task in tasks if task["key"].startswith("train-")]
    assert len(train) == 1
    assert train[0]["worker"] in client.scheduler_info()["workers"]
    assert report.out == out
    assert report.card == json.loads((out / "card.json").read_text())
    assert report.card["training"]["learning_rate"] == config.learning_rate


def test_a_changed_configuration_starts_afresh(on_worker, trained, trainset):
    out, config, _, _ = on_worker
    interrupted = trained.after_epoch_1
    rows = history(out)
    assert [row["epoch"] for row in rows] == [0]
    assert rows[0]["loss"] != history(interrupted)[0]["loss"]
    attrs = dict(zarr.open_group(str(trainset), mode="r").attrs)
    state = read_state(out)
    assert state["config_hash"] == training_hash(config, attrs)
    assert state["config_hash"] != read_state(interrupted)["config_hash"]


def test_a_finished_run_is_not_trained_again(trained, trainset, tiny_config, tmp_path, caplog):
    out = tmp_path / "model"
    shutil.copytree(trained.out, out)
    before = (checkpoint(out, "last")).read_bytes()
    with caplog.at_level(logging.INFO, logger="lensdask.nn.train"):
        report = train_model(trainset, out, config=tiny_config, progress=False)
    assert not [m for m in caplog.messages if m.startswith("train: epoch")]
    assert (checkpoint(out, "last")).read_bytes() == before
    assert report.card["test_metrics"] == trained.card["test_metrics"]
    for a, b in zip(
        weights(out / "model.keras"), weights(trained.out / "model.keras"), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_training_hash_ignores_only_the_stopping_rules(trainset, tiny_config):
    attrs = dict(zarr.open_group(str(trainset), mode="r").attrs)
    base = training_hash(tiny_config, attrs)
    assert training_hash(dataclasses.replace(tiny_config, patience=9), attrs) == base
    # The cosine schedule decays over the epochs; on plateaus they only say when to stop.
    assert training_hash(dataclasses.replace(tiny_config, epochs=50), attrs) != base
    plateau = dataclasses.replace(tiny_config, schedule="plateau")
    longer = dataclasses.replace(plateau, epochs=50, patience=9)
    assert training_hash(longer, attrs) == training_hash(plateau, attrs) != base
    for change in (
        {"learning_rate": 2e-3},
        {"seed": 1},
        {"width": 0.125},
        {"augment": True},
        {"warmup": 1.0},
        {"arbitrary_rotation": True},
    ):
        assert training_hash(dataclasses.replace(tiny_config, **change), attrs) != base
    assert training_hash(tiny_config, {**attrs, "plan_hash": "0" * 16}) != base
    assert training_hash(tiny_config, {**attrs, "config": "0" * 16}) != base


def test_read_state_of_a_missing_or_damaged_state_is_none(tmp_path):
    assert read_state(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "state.json").write_text('{"epoch": ')
    assert read_state(tmp_path) is None


# --- errors --------------------------------------------------------------------------------


def test_a_folder_that_is_no_training_set_is_refused(tmp_path, tiny_config):
    (tmp_path / "trainset.zarr" / "train" / "images").mkdir(parents=True)
    (tmp_path / "trainset.zarr" / "train" / "images" / "zarr.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"not a training set \(no val split\)"):
        train_model(tmp_path / "trainset.zarr", tmp_path / "model", config=tiny_config)


def test_a_training_set_of_another_normalisation_is_refused(trainset, tiny_config, tmp_path):
    copy = tmp_path / "trainset.zarr"
    shutil.copytree(trainset, copy)
    zarr.open_group(str(copy), mode="r+").attrs["normalisation"] = "asinh-1"
    with pytest.raises(ValueError, match=r"'asinh-1'.*'minmax-255'.*rebuild"):
        train_model(copy, tmp_path / "model", config=tiny_config, progress=False)
    assert not (tmp_path / "model" / "model.keras").exists()


# --- a real interruption -------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_training_resumes_from_its_checkpoint(
    trainset, tmp_path, caplog, kill_after_first_epoch
):
    out = tmp_path / "model"
    args = [
        "train", str(trainset), "--out", str(out), "--width", "0.0625", "--epochs", "3",
        "--batch-size", "16", "--seed", "4", "--in-process", "--no-progress",
    ]  # fmt: skip
    assert kill_after_first_epoch(args, out) == -signal.SIGKILL
    killed = read_state(out)
    assert 0 <= killed["epoch"] < 2 and not (out / "model.keras").exists()

    from lensdask.cli import main

    with caplog.at_level(logging.INFO, logger="lensdask.nn.train"):
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"train: resuming after epoch {killed['epoch'] + 1}" in caplog.messages
    epochs_run = [m for m in caplog.messages if m.startswith("train: epoch")]
    assert len(epochs_run) == 2 - killed["epoch"]
    state = read_state(out)
    assert state["epoch"] == 2 and len(history(out)) == 3
    assert state["history"][: killed["epoch"] + 1] == killed["history"]
    card = json.loads((out / "card.json").read_text())
    assert card["training"]["epochs_run"] == 3 and card["training"]["augment"] is True
    assert f"model {card['model_id']}: test AUC {card['test_metrics']['auc']:.4f}" in result.output
