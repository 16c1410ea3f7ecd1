"""Test metrics of the classifier: the ROC kernel against scikit-learn and hand-computed
cases, rates at thresholds against direct counts, batched prediction, and ``lensdask
evaluate`` on a trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from lensdask.bins import bin_index
from lensdask.nn.evaluate import (
    THRESHOLDS,
    auc,
    auc_by_bin,
    classifier_metrics,
    predict_images,
    rates_at,
    roc_curve,
    tpr_at_fpr,
)

LABELS = np.array([0, 0, 1, 1])
SCORES = np.array([0.1, 0.4, 0.35, 0.8])


@st.composite
def labelled_scores(draw):
    """Labels with both classes and scores on a coarse grid, so many scores tie."""
    n = draw(st.integers(2, 60))
    labels = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    assume(0 < labels.sum() < n)
    levels = draw(st.integers(1, 12))
    scores = np.array(draw(st.lists(st.integers(0, levels), min_size=n, max_size=n))) / levels
    return labels, scores


# --- ROC kernel ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(labelled_scores())
def test_roc_curve_and_auc_match_scikit_learn(data):
    labels, scores = data
    fpr, tpr, thresholds = roc_curve(labels, scores)
    ref_fpr, ref_tpr, ref_thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, rtol=0, atol=1e-12)
    assert thresholds[0] == np.inf
    np.testing.assert_array_equal(thresholds[1:], ref_thresholds[1:])
    assert auc(fpr, tpr) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)


def test_roc_curve_of_a_hand_computed_case():
    fpr, tpr, thresholds = roc_curve(LABELS, SCORES)
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert auc(fpr, tpr) == 0.75
    # A tie between a lens and a negative is one step, half credit (Mann-Whitney: 3.5 / 4).
    fpr, tpr, thresholds = roc_curve([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.5, 0.1])
    assert auc(fpr, tpr) == 0.875


def test_roc_curve_counts_more_than_127_lenses_in_int8_labels():
    rng = np.random.default_rng(0)
    labels = (rng.random(1000) < 0.6).astype(np.int8)
    scores = rng.random(1000) + 0.3 * labels
    fpr, tpr, _ = roc_curve(labels, scores)
    ref_fpr, ref_tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    metrics = classifier_metrics(labels, scores)
    positives = int(np.count_nonzero(labels))
    assert positives > 127
    assert (metrics.positives, metrics.negatives) == (positives, 1000 - positives)
    assert metrics.auc == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(labelled_scores(), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 0.3]))
def test_rates_at_a_threshold_are_direct_counts(data, threshold):
    labels, scores = data
    rates = rates_at(labels, scores, threshold)
    positives, negatives = labels == 1, labels == 0
    assert rates["threshold"] == threshold
    assert rates["tpr"] == np.count_nonzero(scores[positives] > threshold) / positives.sum()
    assert rates["fpr"] == np.count_nonzero(scores[negatives] > threshold) / negatives.sum()


@settings(max_examples=100, deadline=None)
@given(labelled_scores(), st.floats(0, 1))
def test_tpr_at_fpr_is_the_best_tpr_within_the_budget(data, target):
    labels, scores = data
    fpr, tpr, _ = roc_curve(labels, scores)
    # Brute force over every threshold "score >= t".
    best = max(
        np.mean(scores[labels == 1] >= t)
        for t in [np.inf, *np.unique(scores)]
        if np.mean(scores[labels == 0] >= t) <= target
    )
    assert tpr_at_fpr(fpr, tpr, target) == pytest.approx(best, abs=1e-12)


def test_tpr_at_fpr_of_the_hand_computed_case():
    fpr, tpr, _ = roc_curve(LABELS, SCORES)
    assert tpr_at_fpr(fpr, tpr, 0.0) == 0.5
    assert tpr_at_fpr(fpr, tpr, 0.01) == 0.5
    assert tpr_at_fpr(fpr, tpr, 0.5) == 1.0


def test_classifier_metrics_of_the_hand_computed_case():
    metrics = classifier_metrics(LABELS, SCORES)
    card = metrics.as_dict()
    low_fpr, completeness = card.pop("low_fpr"), card.pop("completeness_by_bin")
    # two negatives: FPR 1e-2 and below rest on no false positive; above 0.4 one lens of two
    assert [entry["tpr"] for entry in low_fpr["all"]["at_fpr"]] == [None, None, None]
    assert low_fpr["all"]["at_zero_fp"]["tpr"] == 0.5
    assert completeness["threshold"] == 0.75 and completeness["bins"] == {}
    assert card == {
        "auc": 0.75,
        "tpr_at_fpr_1pct": 0.5,
        "rates": [
            {"threshold": 0.25, "tpr": 1.0, "fpr": 0.5},
            {"threshold": 0.5, "tpr": 0.5, "fpr": 0.0},
            {"threshold": 0.75, "tpr": 0.5, "fpr": 0.0},
        ],
        "positives": 2,
        "negatives": 2,
        "auc_by_bin": {},
    }
    assert [rate["threshold"] for rate in metrics.rates] == list(THRESHOLDS)
    json.dumps(metrics.as_dict())


def test_binned_auc_of_the_hand_computed_case():
    # Positive 0.35 beats negative 0.1 and loses to 0.4: AUC 0.5; positive 0.8 beats both.
    theta_e = np.array([np.nan, np.nan, 1.2, 3.0])
    ratio = np.array([np.nan, np.nan, 0.3, 0.01])  # 0.3: the closed last edge; 0.01: outside
    metrics = classifier_metrics(
        LABELS, SCORES, parameters={"theta_E": theta_e, "arc_peak_ratio": ratio, "src_R": ratio}
    )
    rows = metrics.as_dict()["auc_by_bin"]
    assert set(rows) == {"theta_E", "arc_peak_ratio"}
    assert [(r["low"], r["high"], r["positives"], r["auc"]) for r in rows["theta_E"]] == [
        (1.0, 1.5, 1, 0.5),
        (1.5, 2.0, 0, None),
        (2.0, 3.0, 0, None),
        (3.0, 5.0, 1, 1.0),
    ]
    assert [(r["positives"], r["auc"]) for r in rows["arc_peak_ratio"]] == [
        (0, None),
        (0, None),
        (0, None),
        (1, 0.5),
    ]
    assert json.loads(json.dumps(metrics.as_dict())) == metrics.as_dict()


@settings(max_examples=100, deadline=None)
@given(labelled_scores(), st.integers(0, 2**31 - 1))
def test_binned_auc_matches_scikit_learn_on_each_bin(data, seed):
    labels, scores = data
    values = np.random.default_rng(seed).uniform(0.5, 5.5, labels.size)
    edges = (1.0, 2.0, 3.5, 5.0)
    rows = auc_by_bin(labels, scores, values, edges)
    index = bin_index(values, edges)
    for k, row in enumerate(rows):
        inside = (labels == 1) & (index == k)
        assert row["positives"] == inside.sum()
        if not inside.any():
            assert row["auc"] is None
            continue
        keep = inside | (labels == 0)
        expected = skm.roc_auc_score(labels[keep], scores[keep])
        assert row["auc"] == pytest.approx(expected, abs=1e-12)


def test_bin_index_closes_the_last_bin_and_drops_nan():
    values = np.array([0.5, 1.0, 1.99, 2.0, 5.0, 5.01, np.nan])
    assert bin_index(values, (1.0, 2.0, 5.0)).tolist() == [-1, 0, 0, 1, 1, 2, -1]


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "needs both positives and negatives"),
        ([0, 0], [0.1, 0.2], "needs both positives and negatives"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "must be 0 or 1"),
        ([0, -1, 1], [0.1, 0.2, 0.3], "must be 0 or 1"),
        ([0, 1, 1], [0.1, 0.2], r"equal 1-d shapes, got \(3,\), \(2,\)"),
        ([[0, 1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], "equal 1-d shapes"),
    ],
)
def test_roc_curve_refuses_bad_input(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        roc_curve(labels, scores)
    with pytest.raises(ValueError, match=message):
        classifier_metrics(np.asarray(labels), np.asarray(scores))


# --- prediction ----------------------------------------------------------------------------


class ShapeRecorder:
    """Delegates ``predict_on_batch`` to a model and records the shapes it is given."""

    def __init__(self, model) -> None:
        self.model, self.shapes, self.dtypes = model, [], set()

    def predict_on_batch(self, batch):
        self.shapes.append(batch.shape)
        self.dtypes.add(batch.dtype)
        return self.model.predict_on_batch(batch)


@pytest.mark.parametrize(("n", "batch_size"), [(23, 8), (5, 8), (16, 8), (1, 4)])
def test_predict_images_pads_to_one_shape_and_drops_the_padding(n, batch_size):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((9, 9, 1))
    hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    images = np.random.default_rng(n).uniform(0, 255, (n, 9, 9)).astype(np.float64)
    recorder = ShapeRecorder(model)
    scores = predict_images(recorder, images, batch_size=batch_size)
    assert scores.shape == (n,) and scores.dtype == np.float32
    assert set(recorder.shapes) == {(batch_size, 9, 9, 1)}
    assert len(recorder.shapes) == -(-n // batch_size)
    assert recorder.dtypes == {np.dtype(np.float32)}
    whole = model.predict_on_batch(images[..., None].astype(np.float32))[:, 0]
    np.testing.assert_allclose(scores, whole, rtol=1e-6, atol=1e-7)


def test_predict_images_of_no_images_is_empty():
    class Never:
        def predict_on_batch(self, batch):  # pragma: no cover - must not be called
            raise AssertionError("called")

    assert predict_images(Never(), np.zeros((0, 9, 9), np.float32)).shape == (0,)


# --- lensdask evaluate ---------------------------------------------------------------------


def test_evaluate_command_recomputes_the_card_metrics(trained, trainset, tmp_path):
    pytest.importorskip("keras")
    from lensdask.cli import main

    out = tmp_path / "evaluation"
    result = CliRunner().invoke(
        main, ["evaluate", str(trained.out), str(trainset), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    card = trained.card
    metrics = card["test_metrics"]
    assert f"model {card['model_id']}: test AUC {metrics['auc']:.4f}" in result.output
    assert "(16 lenses, 16 negatives)" in result.output
    for name, rows in metrics["auc_by_bin"].items():
        assert f"AUC by {name}: {rows[0]['low']:g}-{rows[0]['high']:g}: " in result.output
    assert sum(row["positives"] for row in metrics["auc_by_bin"]["theta_E"]) == 16
    assert f"-> {out}" in result.output
    # 16 negatives: no rate below FPR 1/16 is defined, the zero-FP one always is
    assert "all negatives (16): TPR at FPR 1e-2 undefined (needs at least 100" in result.output
    assert f"0 FP {metrics['low_fpr']['all']['at_zero_fp']['tpr']:.3f}" in result.output
    written = json.loads((out / "metrics.json").read_text())
    assert written.pop("model_id") == card["model_id"]
    assert written.pop("trainset") == str(trainset)
    assert written == metrics
    for name in ("roc.png", "p_cnn_test.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (trained.out / "metrics.json").exists()


def test_evaluate_command_takes_a_budget_and_survey_sizes(trained, trainset, tmp_path):
    pytest.importorskip("keras")
    from lensdask.cli import main

    out = tmp_path / "evaluation"
    args = ["evaluate", str(trained.out), str(trainset), "--out", str(out)]
    result = CliRunner().invoke(
        main, [*args, "--false-positives-per-100k", "10000", "--survey", "LSST LRG=2,300,000"]
    )
    assert result.exit_code == 0, result.output
    point = json.loads((out / "metrics.json").read_text())["low_fpr"]["all"]["working_point"]
    # FPR 0.1 of 16 negatives: one false positive allowed
    assert (point["per_100k"], point["allowed"]) == (10_000, 1)
    assert list(point["expected_candidates"]) == ["LSST LRG"]
    assert point["expected_candidates"]["LSST LRG"]["targets"] == 2_300_000
    assert "non-lens candidates expected: LSST LRG " in result.output
    result = CliRunner().invoke(main, [*args, "--survey", "LSST=many"])
    assert result.exit_code == 2 and "expected NAME=TARGETS" in result.output


def test_evaluate_command_names_a_damaged_model(trained, trainset, model_copy):
    from lensdask.cli import main

    data = bytearray((model_copy / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_copy / "model.keras").write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["evaluate", str(model_copy), str(trainset)])
    assert result.exit_code == 1
    assert "model.keras" in result.output and "hash does not match" in result.output
