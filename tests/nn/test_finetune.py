"""Fine-tuning on graded candidates: labels from a hand-made grades table, the fine-tune
set's composition, the refusals, the card, and a resume after a kill.

The parent is the tiny model of ``tests/nn/conftest.py`` (width 1/16, trained on the tiny
training set); the candidates are the cutouts of the store the training set was made from.
Counts are checked against the grades typed in here, and against DuckDB's count of them.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner

from lensdask.config import ConfigError, FinetuneConfig
from lensdask.formats.grades import GradeError, write_grades_csv
from lensdask.nn.finetune import (
    SET_DIR,
    FinetuneError,
    build_finetune_set,
    grade_labels,
    replay_size,
    split_candidates,
)

keras = pytest.importorskip("keras")

N_LENS, N_NON, N_SPLIT = 20, 20, 4
"""Hand-made grades: 20 accepted candidates, 20 rejected, 4 the graders disagree on."""
SMALL = FinetuneConfig(
    epochs=2, batch_size=16, copies=2, replay=0.5, holdout=0.25, val_fraction=0.2,
    min_positives=5, min_negatives=5, augment=False, mixed_precision=False, seed=3,
)  # fmt: skip


def hand_made_grades(ids: list[str]) -> pd.DataFrame:
    """Three graders per candidate: AAB for lenses, CDD for non-lenses, ABC+D split."""
    rows = []
    for k, cid in enumerate(ids[:N_LENS]):
        rows += [(cid, "ann", "A"), (cid, "bob", "A" if k % 2 else "B"), (cid, "cy", "B")]
    for cid in ids[N_LENS : N_LENS + N_NON]:
        rows += [(cid, "ann", "C"), (cid, "bob", "D"), (cid, "cy", "D")]
    for cid in ids[N_LENS + N_NON : N_LENS + N_NON + N_SPLIT]:
        rows += [(cid, "ann", "A"), (cid, "bob", "D")]
    return pd.DataFrame(rows, columns=["candidate_id", "grader", "grade"])


@pytest.fixture(scope="module")
def graded(trainset, tmp_path_factory):
    """The candidates table (every cutout of the store, with a p_cnn) and the grades CSV."""
    from lensdask.formats.cutout_store import complete_tiles, read_tile_columns

    cutouts = trainset.parent / "cutouts.zarr"
    ids = [
        str(i)
        for tile in complete_tiles(cutouts)
        for i in read_tile_columns(cutouts, tile, ["ID"])["ID"]
    ]
    root = tmp_path_factory.mktemp("graded")
    candidates = root / "candidates.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"ID": ids, "p_cnn": rng.uniform(0.5, 1, len(ids))}).to_csv(
        candidates, index=False
    )
    grades = write_grades_csv(hand_made_grades(ids), root / "grades.csv")
    return cutouts, candidates, grades, ids


# --- kernels -------------------------------------------------------------------------------


def test_labels_follow_the_verdict_and_the_agreement(graded):
    _, _, grades, ids = graded
    frame = pd.read_csv(grades)
    labels = grade_labels(frame, dict.fromkeys(ids, 0.9), config=FinetuneConfig())
    assert (labels["label"] == 1).sum() == N_LENS
    assert (labels["label"] == 0).sum() == N_NON
    left = labels[labels["label"] == -1]
    assert len(left) == N_SPLIT and set(left["reason"]) == {"graders disagree"}
    # two grades in three: fewer than min_grades leaves the split ones out for that reason
    labels = grade_labels(frame, dict.fromkeys(ids, 0.9), config=FinetuneConfig(min_grades=3))
    assert set(labels.loc[labels["label"] == -1, "reason"]) == {"fewer than 3 grades"}


def test_a_p_threshold_picks_the_lenses_by_p(graded):
    _, _, grades, ids = graded
    frame = pd.read_csv(grades)
    scores = {cid: (0.95 if k < 10 else 0.5) for k, cid in enumerate(ids)}
    labels = grade_labels(frame, scores, config=FinetuneConfig(positive_p=0.7))
    # s_ave of AAB/ABB is 9.0 or 8.0: P = 0.855 or 0.76 for the first 10, <= 0.45 after
    lens = labels.set_index("candidate_id")["label"]
    assert (lens[ids[:10]] == 1).all() and (lens[ids[10:N_LENS]] == -1).all()
    assert (lens[ids[N_LENS : N_LENS + N_NON]] == 0).all()


def test_agreement_is_a_strict_majority():
    with pytest.raises(ConfigError, match=r"finetune\.agreement"):
        FinetuneConfig(agreement=0.5)


def test_splits_are_stratified_and_disjoint():
    labels = pd.DataFrame({"candidate_id": [f"c{k}" for k in range(100)], "label": [1, 0] * 50})
    split = split_candidates(labels, holdout=0.2, val_fraction=0.25, seed=1)
    table = pd.crosstab(split, labels["label"])
    assert table.loc["test"].tolist() == [10, 10]
    assert table.loc["val"].tolist() == [10, 10] and table.loc["train"].tolist() == [30, 30]
    assert replay_size(60, share=0.5, available=1000) == 60
    assert replay_size(60, share=0.75, available=100) == 100


# --- the fine-tune set ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetune_set(graded, trainset, trained, tmp_path_factory):
    from lensdask.formats.model_dir import read_card

    cutouts, candidates, grades, _ = graded
    out = tmp_path_factory.mktemp("set") / SET_DIR
    card = read_card(trained.out)
    return build_finetune_set(grades, candidates, cutouts, trainset, out, card=card, config=SMALL)


def test_the_set_has_the_graded_classes_the_replay_share_and_disjoint_splits(
    finetune_set, trainset, graded
):
    import duckdb

    _, _, grades, _ = graded
    counts = dict(
        duckdb.sql(
            f"SELECT label, count(*) FROM (SELECT candidate_id, "
            f"CASE WHEN sum(CASE WHEN grade IN ('A','B') THEN 1 ELSE 0 END) * 1.0 / count(*) "
            f">= 0.6 THEN 1 WHEN sum(CASE WHEN grade IN ('C','D') THEN 1 ELSE 0 END) * 1.0 "
            f"/ count(*) >= 0.6 THEN 0 ELSE -1 END AS label FROM '{grades}' "
            f"GROUP BY candidate_id) GROUP BY label"
        ).fetchall()
    )
    assert counts == {1: N_LENS, 0: N_NON, -1: N_SPLIT}
    comp = finetune_set.composition
    held = comp["test"]
    # 25% of each class held out, 20% of the rest validates, the rest trains in 2 copies
    assert (held["graded_lenses"], held["graded_non_lenses"]) == (5, 5)
    assert (comp["val"]["graded_lenses"], comp["val"]["graded_non_lenses"]) == (3, 3)
    assert (comp["train"]["graded_lenses"], comp["train"]["graded_non_lenses"]) == (24, 24)
    assert held["replay_lenses"] + held["replay_non_lenses"] == 0
    root = zarr.open_group(str(finetune_set.path), mode="r")
    for split in ("train", "val"):
        c = comp[split]
        graded_n = c["graded_lenses"] + c["graded_non_lenses"]
        replay_n = c["replay_lenses"] + c["replay_non_lenses"]
        available = zarr.open_group(str(trainset / split), mode="r")["label"].shape[0]
        assert replay_n == min(graded_n, available)  # replay 0.5: as many as graded
        assert root[split]["label"].shape[0] == graded_n + replay_n
        kinds = root[split]["kind"][:]
        assert (kinds == "graded").sum() == graded_n
    ids = {
        split: set(root[split]["source_id"][:][root[split]["kind"][:] == "graded"])
        for split in ("train", "val", "test")
    }
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    labelled = finetune_set.labels.set_index("candidate_id")
    for split, members in ids.items():
        assert (labelled.loc[sorted(members), "split"] == split).all()
    images = root["train"]["images"][:]
    assert images.min() >= 0 and images.max() <= 255


def test_grades_of_unknown_candidates_or_without_a_cutout_are_named(
    graded, trainset, trained, tmp_path
):
    from lensdask.formats.model_dir import read_card

    cutouts, candidates, grades, _ = graded
    extra = pd.concat(
        [
            pd.read_csv(grades),
            pd.DataFrame(
                [["KiDS nowhere", "ann", "A"]], columns=["candidate_id", "grader", "grade"]
            ),
        ]
    )
    bad = write_grades_csv(extra, tmp_path / "bad.csv")
    with pytest.raises(GradeError, match=r"bad.csv line \d+: candidate 'KiDS nowhere' is not"):
        build_finetune_set(
            bad, candidates, cutouts, trainset, tmp_path / "set.zarr",
            card=read_card(trained.out), config=SMALL,
        )  # fmt: skip
    # a candidate in the table but with no cutout in the store
    more = tmp_path / "candidates.csv"
    table = pd.read_csv(candidates)
    pd.concat([table, pd.DataFrame({"ID": ["KiDS nowhere"], "p_cnn": [0.9]})]).to_csv(
        more, index=False
    )
    with pytest.raises(GradeError, match="'KiDS nowhere' has no cutout"):
        build_finetune_set(
            bad, more, cutouts, trainset, tmp_path / "set.zarr",
            card=read_card(trained.out), config=SMALL,
        )  # fmt: skip


def test_too_few_examples_are_refused_with_the_counts(graded, trainset, trained, tmp_path):
    from dataclasses import replace

    from lensdask.formats.model_dir import read_card

    cutouts, candidates, grades, _ = graded
    with pytest.raises(FinetuneError, match=f"{N_LENS} lenses and {N_NON} non-lenses"):
        build_finetune_set(
            grades, candidates, cutouts, trainset, tmp_path / "set.zarr",
            card=read_card(trained.out), config=replace(SMALL, min_positives=N_LENS + 1),
        )  # fmt: skip


def test_a_model_made_for_other_stamps_is_refused(graded, model_copy):
    from lensdask.nn.finetune import model_fit_problems

    cutouts = graded[0]
    assert model_fit_problems(model_copy, cutouts) == []
    card = json.loads((model_copy / "card.json").read_text())
    for key, value, said in (
        ("band", "g", "trained on the g band"),
        ("pixel_scale", 0.26, 'made for 0.26"/px'),
        ("normalisation", "asinh", "normalised by 'asinh'"),
        ("input_shape", [64, 64, 1], "takes 64x64 px stamps"),
    ):
        (model_copy / "card.json").write_text(json.dumps({**card, key: value}))
        problems = model_fit_problems(model_copy, cutouts)
        assert any(said in problem for problem in problems), problems
    (model_copy / "card.json").write_text(json.dumps(card))


# --- the fine-tune ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetuned(graded, trainset, trained, tmp_path_factory):
    from lensdask.nn.finetune import finetune_model

    cutouts, candidates, grades, _ = graded
    out = tmp_path_factory.mktemp("finetuned") / "model"
    return finetune_model(
        trained.out, grades, candidates, cutouts, trainset, out, config=SMALL, progress=False
    )


def test_the_card_records_the_parent_the_grades_and_both_evaluations(finetuned, trained):
    from lensdask.formats.model_dir import read_card

    card = read_card(finetuned.out)  # the hash still matches after the card was completed
    section = card["finetune"]
    assert section["parent"]["model_id"] == trained.card["model_id"]
    assert card["model_id"] != trained.card["model_id"]
    grades = section["grades"]
    assert grades["by_grade"] == {"A": 34, "B": 30, "C": 20, "D": 44}
    assert grades["by_grader"]["ann"] == {"A": 24, "B": 0, "C": 20, "D": 0}
    assert grades["by_grader"]["cy"] == {"A": 0, "B": 20, "C": 0, "D": 20}
    assert section["labelled"] == {"lenses": N_LENS, "non_lenses": N_NON, "left_out": N_SPLIT}
    assert section["holdout_metrics"]["positives"] == 5
    assert section["holdout_metrics"]["negatives"] == 5
    # the test metrics are the original test split's, as the parent's
    assert card["test_metrics"]["positives"] == trained.card["test_metrics"]["positives"]
    assert card["training"]["epochs_run"] <= SMALL.epochs
    assert (finetuned.out / "holdout" / "roc.png").is_file()


def test_training_starts_from_the_parents_weights(finetuned, trained):
    from lensdask.formats.model_dir import load_model

    parent, _ = load_model(trained.out)
    child, _ = load_model(finetuned.out)
    kernels = [
        (np.asarray(a), np.asarray(b))
        for a, b in zip(parent.trainable_weights, child.trainable_weights, strict=True)
        if a.ndim == 4
    ]
    moved = [np.linalg.norm(a - b) / np.linalg.norm(a) for a, b in kernels]
    # from the parent: every kernel within 10% of it; fresh random kernels would not be
    assert max(moved) < 0.1, max(moved)


def test_a_finished_finetune_is_not_redone(finetuned, graded, trainset, trained, caplog):
    from lensdask.nn.finetune import finetune_model

    cutouts, candidates, grades, _ = graded
    with caplog.at_level(logging.INFO, logger="lensdask"):
        again = finetune_model(
            trained.out, grades, candidates, cutouts, trainset, finetuned.out,
            config=SMALL, progress=False,
        )  # fmt: skip
    assert again.card == finetuned.card
    assert not [m for m in caplog.messages if m.startswith("train: epoch")]


@pytest.mark.slow
def test_a_killed_finetune_resumes_from_its_checkpoint(
    graded, trainset, trained, tmp_path, kill_after_first_epoch
):
    from lensdask.nn.train import read_state

    cutouts, candidates, grades, _ = graded
    out = tmp_path / "model"
    args = [
        "finetune", str(trained.out), "--grades", str(grades), "--candidates",
        str(candidates), "--cutouts", str(cutouts), "--trainset", str(trainset),
        "--out", str(out), "--epochs", "3", "--batch-size", "16", "--copies", "2",
        "--holdout", "0.25", "--min-positives", "5", "--min-negatives", "5",
        "--in-process", "--no-progress",
    ]  # fmt: skip
    kill_after_first_epoch(args, out)
    killed = read_state(out)
    assert 0 <= killed["epoch"] < 2 and not (out / "model.keras").exists()

    from lensdask.cli import main

    logger = logging.getLogger("lensdask.nn.train")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    try:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    finally:
        logger.removeHandler(handler)
    assert result.exit_code == 0, result.output
    assert f"train: resuming after epoch {killed['epoch'] + 1}" in records
    state = read_state(out)
    assert state["history"][: killed["epoch"] + 1] == killed["history"]
    card = json.loads((out / "card.json").read_text())
    assert card["finetune"]["parent"]["model_id"] == trained.card["model_id"]
    assert "held-out grades: AUC" in result.output
