"""Committees: members trained independently (one Dask task each, each resumable on its
own), one card, all members resident when scoring, evaluation of each member and of the
committee.

Every member is a ResNet-18 of width 1/16 or 3/32 trained for 2 epochs on the tiny
training set of conftest.py. The references: Keras' own predictions of each member
(reloaded from its file) for the scores and the committee's metrics; ``hashlib`` for the
committee's id; the uninterrupted run on the Dask workers for the resumed run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lensdask.formats.model_dir import ModelError, load_members, load_model, read_card
from lensdask.nn.train import read_state, train_model

keras = pytest.importorskip("keras")

MEMBERS = 3
WIDTHS = (0.0625, 0.0625, 0.09375)


@pytest.fixture(scope="module")
def config(tiny_config):
    return dataclasses.replace(tiny_config, epochs=2, members=MEMBERS, member_widths=WIDTHS)


@pytest.fixture(scope="module")
def on_workers(trainset, config, client, tmp_path_factory):
    """The committee trained on the session's cluster, with the tasks that ran."""
    from distributed import get_task_stream

    out = tmp_path_factory.mktemp("committee") / "model"
    with get_task_stream(client=client) as stream:
        report = train_model(trainset, out, config=config, client=client, progress=False)
    return out, report.card, stream.data


def member_weights(out: Path, k: int) -> list[np.ndarray]:
    return load_model(out / "members" / str(k))[0].get_weights()


@pytest.mark.slow
def test_members_train_as_independent_tasks_on_the_workers(on_workers, client):
    out, _, tasks = on_workers
    members = sorted(t["key"] for t in tasks if t["key"].startswith("train-member-"))
    assert [key.split("-")[2] for key in members] == ["0", "1", "2"]
    workers = client.scheduler_info()["workers"]
    assert all(t["worker"] in workers for t in tasks if t["key"].startswith("train-"))
    assert len([t for t in tasks if t["key"].startswith("train-committee-")]) == 1
    for k in range(MEMBERS):  # each member has its own checkpoints, all epochs run
        assert read_state(out / "members" / str(k))["epoch"] == 1
    assert not (out / "model.keras").exists() and not (out / "checkpoints").exists()


@pytest.mark.slow
def test_members_have_their_own_seeds_widths_and_weights(on_workers, config):
    out, _, _ = on_workers
    cards = [read_card(out / "members" / str(k)) for k in range(MEMBERS)]
    assert [c["seed"] for c in cards] == [config.seed + k for k in range(MEMBERS)]
    assert [c["architecture"]["width"] for c in cards] == list(WIDTHS)
    assert all(c["training"]["members"] == 1 for c in cards)
    first, second = member_weights(out, 0), member_weights(out, 1)
    assert [w.shape for w in first] == [w.shape for w in second]
    assert not any(np.array_equal(a, b) for a, b in zip(first, second, strict=True) if a.size > 1)
    assert len({c["model_id"] for c in cards}) == MEMBERS


@pytest.mark.slow
def test_the_card_records_members_and_combination(on_workers, config):
    out, card, _ = on_workers
    assert card == json.loads((out / "card.json").read_text()) == read_card(out)
    committee = card["committee"]
    assert committee["combination"] == "mean"
    ids = [read_card(out / "members" / str(k))["model_id"] for k in range(MEMBERS)]
    assert [m["model_id"] for m in committee["members"]] == ids
    assert [m["path"] for m in committee["members"]] == ["members/0", "members/1", "members/2"]
    assert [m["width"] for m in committee["members"]] == list(WIDTHS)
    assert card["model_id"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    assert card["input_shape"] == [101, 101, 1] and card["training"]["members"] == MEMBERS
    for k, member in enumerate(committee["members"]):
        assert member["test_metrics"] == read_card(out / "members" / str(k))["test_metrics"]
    assert (out / "roc.png").stat().st_size > 0


@pytest.mark.slow
def test_committee_metrics_are_those_of_the_mean_of_keras_predictions(on_workers, trainset):
    import zarr

    from lensdask.formats.trainset import read_table
    from lensdask.nn.evaluate import classifier_metrics, split_kinds

    out, card, _ = on_workers
    models, _ = load_members(out, input_shape=(101, 101, 1))
    assert len(models) == MEMBERS
    test = read_table(trainset, "test")
    images = zarr.open_group(str(trainset / "test"), mode="r")["images"][:]
    per_member = np.stack([m.predict(images[..., None], verbose=0)[:, 0] for m in models])
    mean = per_member.astype(np.float32).mean(axis=0)
    labels = test["label"].to_numpy()
    parameters = {name: test[name].to_numpy(float) for name in ("theta_E", "arc_peak_ratio")}
    expected = classifier_metrics(
        labels, mean, parameters=parameters, kinds=split_kinds(trainset, "test")
    )
    assert card["test_metrics"]["auc"] == pytest.approx(expected.auc, abs=1e-6)
    assert card["test_metrics"]["positives"] == int(labels.sum())
    for k in range(MEMBERS):
        alone = classifier_metrics(labels, per_member[k]).auc
        assert card["committee"]["members"][k]["test_metrics"]["auc"] == pytest.approx(
            alone, abs=1e-6
        )


@pytest.mark.slow
def test_a_replaced_member_is_refused(on_workers, tmp_path):
    out, _, _ = on_workers
    copy = tmp_path / "model"
    shutil.copytree(out, copy)
    for name in ("model.keras", "card.json"):
        shutil.copy2(copy / "members" / "0" / name, copy / "members" / "1" / name)
    with pytest.raises(ModelError, match=r"members/1: member 1 is model"):
        read_card(copy)
    with pytest.raises(ModelError, match="a committee of 3 networks"):
        load_model(out)


# --- kernels and configuration -----------------------------------------------------------


def test_combinations_are_numpys_mean_and_median():
    from lensdask.nn.evaluate import combine_scores

    scores = np.random.default_rng(0).random((3, 50), dtype=np.float32)
    np.testing.assert_array_equal(combine_scores(scores, "mean"), scores.mean(axis=0))
    np.testing.assert_array_equal(combine_scores(scores, "median"), np.median(scores, axis=0))
    assert combine_scores(scores[:1], "mean").tolist() == scores[0].tolist()
    with pytest.raises(ValueError, match="shape"):
        combine_scores(scores[0], "mean")


def test_member_configs_and_bad_committees():
    from lensdask.config import ConfigError, TrainConfig
    from lensdask.nn.committee import member_config

    config = TrainConfig(seed=5, members=2, member_widths=(0.25, 0.5))
    assert [member_config(config, k).seed for k in range(2)] == [5, 6]
    assert [member_config(config, k).width for k in range(2)] == [0.25, 0.5]
    assert member_config(config, 1).members == 1
    with pytest.raises(ConfigError, match=r"train.member_widths: one width per member \(3\)"):
        TrainConfig(members=3, member_widths=(0.25,))
    with pytest.raises(ConfigError, match=r"train\.combination"):
        TrainConfig(members=3, combination="vote")
    with pytest.raises(ConfigError, match=r"train\.members"):
        TrainConfig(members=0)


def test_the_plan_has_a_task_per_member():
    from lensdask.config import TrainConfig
    from lensdask.plan import JobSizes, plan_train

    sizes = JobSizes(
        tiles=1, sources=None, bg=None, lrg=None, stamp_bytes=101 * 101 * 4, train_examples=1000
    )
    one = plan_train(TrainConfig(width=0.25), sizes)
    three = plan_train(TrainConfig(width=0.25, members=3), sizes)
    assert (one.tasks, three.tasks) == (1, 3)
    assert three.work["example-epochs"] == pytest.approx(3 * one.work["example-epochs"])


# --- a training killed during member 1, resumed ---------------------------------------------


class _KillError(Exception):
    """Raised from the training's log as member 1 commits its first epoch."""


class _Killer(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.epochs = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("train: epoch "):
            self.epochs += 1
            if self.epochs == 3:  # member 0 ran 2 epochs; this is member 1's first
                raise _KillError


@pytest.fixture(scope="module")
def interrupted(trainset, config, tmp_path_factory):
    """A committee trained in this process, killed after member 1's first epoch."""
    out = tmp_path_factory.mktemp("killed") / "model"
    logger = logging.getLogger("lensdask.nn.train")
    handler, level = _Killer(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.raises(_KillError):
            train_model(trainset, out, config=config, progress=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return out


@pytest.mark.slow
def test_a_resumed_committee_trains_only_what_is_missing(
    interrupted, on_workers, trainset, config, tmp_path, caplog
):
    killed = interrupted
    assert (killed / "members" / "0" / "model.keras").is_file()
    assert read_state(killed / "members" / "1")["epoch"] == 0
    assert not (killed / "members" / "1" / "model.keras").exists()
    assert not (killed / "members" / "2").exists() and not (killed / "card.json").exists()
    out = tmp_path / "model"
    shutil.copytree(killed, out)
    member_0 = (out / "members" / "0" / "model.keras").read_bytes()
    with caplog.at_level(logging.INFO, logger="lensdask.nn.train"):
        report = train_model(trainset, out, config=config, progress=False)
    epochs = [m for m in caplog.messages if m.startswith("train: epoch ")]
    # member 1's second epoch, then member 2's two
    assert [m.split()[2] for m in epochs] == ["2/2", "1/2", "2/2"]
    assert caplog.messages.count("train: resuming after epoch 1") == 1
    assert (out / "members" / "0" / "model.keras").read_bytes() == member_0  # not retrained
    # the same batches in the same order as the uninterrupted run on the workers
    reference, _, _ = on_workers
    for k in range(MEMBERS):
        for a, b in zip(member_weights(out, k), member_weights(reference, k), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert report.card["committee"]["combination"] == "mean"
    assert read_card(out)["model_id"] == report.card["model_id"]


# --- scoring -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(on_workers, trainset, client, tmp_path_factory):
    from lensdask.score.scoring import score_cutouts

    out, _, _ = on_workers
    scores = tmp_path_factory.mktemp("committee-scores") / "scores"
    report = score_cutouts(trainset.parent / "cutouts.zarr", out, scores, client=client)
    return scores, report


@pytest.mark.slow
def test_scores_hold_every_member_and_their_mean(scored, on_workers, trainset):
    from lensdask.formats.cutout_store import read_tile
    from lensdask.nn.evaluate import predict_images
    from lensdask.normalise import normalise_stamps

    scores, report = scored
    out, card, _ = on_workers
    assert report.units.ok and report.problems == [] and report.model_id == card["model_id"]
    frame = pd.read_parquet(scores)
    members = [f"p_cnn_{k}" for k in range(MEMBERS)]
    assert list(frame.columns[-MEMBERS:]) == members
    stacked = frame[members].to_numpy(np.float32).T
    np.testing.assert_array_equal(frame["p_cnn"].to_numpy(), stacked.mean(axis=0))
    assert set(frame["model_id"]) == {card["model_id"]}
    models, _ = load_members(out)
    store = trainset.parent / "cutouts.zarr"
    for tile, part in frame.groupby("THELI_NAME"):
        cut = read_tile(store, tile, bands=("r",))
        assert part["ID"].tolist() == cut.ids.astype(object).tolist()
        images = normalise_stamps(cut.images["r"])
        for k, model in enumerate(models):
            direct = predict_images(model, images, batch_size=256)
            np.testing.assert_allclose(part[members[k]], direct, rtol=0, atol=2e-6)
    assert frame[members].std(axis=1).max() > 0  # the members disagree somewhere
