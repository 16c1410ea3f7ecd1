"""Rates at low false-positive rates and the selection function's intervals: the kernels
against brute-force counts on hand-made score sets (ties, zero false positives, too few
negatives), scikit-learn's ``roc_curve``, a plain re-implementation of the bootstrap, and
SciPy's exact binomial intervals and tail probabilities; neighbour counts against astropy."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord, search_around_sky
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, binomtest
from sklearn import metrics as skm

from lensdask.nn.evaluate import ALL_SET, LRG_SET, classifier_metrics, metrics_lines
from lensdask.nn.rates import (
    SURVEY_SIZES,
    bootstrap_tpr,
    expected_candidates,
    low_fpr_rates,
    tpr_at_fpr,
    tpr_at_zero_fp,
)
from lensdask.selection import (
    binned_completeness,
    binomial_interval,
    neighbour_counts,
    selection_function,
)

# Ten negatives with a tie at the top two places, five positives, one tied with a negative.
NEG = np.array([0.95, 0.95, 0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
POS = np.array([0.99, 0.96, 0.95, 0.8, 0.3])


def brute_force(positives, negatives, fpr):
    """Best TPR over every threshold ``score > t`` with at most floor(fpr N) negatives
    above it, and the false positives of the lowest such threshold (typed in from the
    definition)."""
    allowed = math.floor(fpr * len(negatives) + 1e-9)
    best = None
    for t in [-np.inf, *np.unique(np.r_[positives, negatives])]:
        fp = int(np.sum(negatives > t))
        if fp <= allowed:
            tpr = float(np.mean(positives > t))
            if best is None or tpr > best[0] or (tpr == best[0] and fp > best[1]):
                best = (tpr, fp)
    return best


# --- hand-made cases -----------------------------------------------------------------------


def test_hand_made_rates_with_ties():
    # FPR 0.1 of 10 negatives: one false positive allowed; the tie at 0.95 would make two,
    # so the threshold is 0.95 and only 0.99 and 0.96 are above it.
    r = tpr_at_fpr(POS, NEG, 0.1)
    assert (r["allowed"], r["threshold"], r["false_positives"]) == (1, 0.95, 0)
    assert r["tpr"] == pytest.approx(2 / 5)
    # FPR 0.2: two allowed, the threshold is the third-highest negative, 0.9.
    r = tpr_at_fpr(POS, NEG, 0.2)
    assert (r["threshold"], r["false_positives"], r["tpr"]) == (0.9, 2, 3 / 5)
    assert r["fpr_measured"] == 0.2
    # FPR 0.5: five allowed, threshold 0.5 (the sixth negative): 0.8 is in, 0.3 out.
    r = tpr_at_fpr(POS, NEG, 0.5)
    assert (r["threshold"], r["false_positives"], r["tpr"]) == (0.5, 5, 4 / 5)
    # FPR 1: everything selected.
    assert tpr_at_fpr(POS, NEG, 1.0)["tpr"] == 1.0


def test_zero_false_positives_is_above_the_highest_negative():
    zero = tpr_at_zero_fp(POS, NEG)
    assert zero == {"threshold": 0.95, "tpr": 2 / 5, "false_positives": 0}
    # a positive tied with the highest negative is not counted
    assert tpr_at_zero_fp([0.5, 0.5, 0.6], [0.5, 0.1])["tpr"] == pytest.approx(1 / 3)
    # FPR 0 is the same rate
    assert tpr_at_fpr(POS, NEG, 0.0)["tpr"] == zero["tpr"]


def test_rate_resting_on_no_false_positive_is_undefined():
    rng = np.random.default_rng(0)
    negatives, positives = rng.random(2000), rng.random(300) + 0.5
    r = tpr_at_fpr(positives, negatives, 1e-4)
    assert r["tpr"] is None and r["threshold"] is None and r["allowed"] == 0
    assert "10000 negatives" in r["reason"] and "2000" in r["reason"]
    rates = low_fpr_rates(positives, negatives, resamples=50)
    assert [e["tpr"] is None for e in rates["at_fpr"]] == [False, False, True]
    assert rates["at_fpr"][2]["interval"] is None
    # 100 per 100k is FPR 1e-3: two false positives allowed among 2000
    point = rates["working_point"]
    assert point["allowed"] == 2 and point["false_positives"] <= 2
    assert (
        low_fpr_rates(positives, negatives, false_positives_per_100k=1, resamples=10)[
            "working_point"
        ]["tpr"]
        is None
    )
    # the zero-FP rate is always given, without an interval, saying why
    assert rates["at_zero_fp"]["interval"] is None and rates["at_zero_fp"]["reason"]


@pytest.mark.parametrize(
    ("positives", "negatives", "message"),
    [([], [0.1], "positives and negatives"), ([0.2], [np.nan], "finite")],
)
def test_rates_refuse_bad_input(positives, negatives, message):
    with pytest.raises(ValueError, match=message):
        tpr_at_fpr(positives, negatives, 0.01)


# --- against brute force and scikit-learn ----------------------------------------------------


@st.composite
def score_sets(draw):
    """Positives and negatives on a coarse grid, so that many scores tie."""
    levels = draw(st.integers(1, 15))
    pos = draw(st.lists(st.integers(0, levels), min_size=1, max_size=40))
    neg = draw(st.lists(st.integers(0, levels), min_size=1, max_size=300))
    return np.array(pos) / levels, np.array(neg) / levels


@settings(max_examples=200, deadline=None)
@given(score_sets(), st.sampled_from([0.0, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.37, 1.0]))
def test_tpr_at_fpr_matches_brute_force_and_scikit_learn(data, fpr):
    positives, negatives = data
    r = tpr_at_fpr(positives, negatives, fpr)
    if r["tpr"] is None:
        assert fpr > 0 and fpr * len(negatives) < 1
        return
    tpr, fp = brute_force(positives, negatives, fpr)
    assert r["tpr"] == pytest.approx(tpr, abs=1e-12)
    assert r["false_positives"] == fp == np.sum(negatives > r["threshold"])
    assert r["false_positives"] <= r["allowed"] == math.floor(fpr * len(negatives) + 1e-9)
    labels = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    ref_fpr, ref_tpr, _ = skm.roc_curve(
        labels, np.r_[positives, negatives], drop_intermediate=False
    )
    assert r["tpr"] == pytest.approx(ref_tpr[ref_fpr <= r["allowed"] / len(negatives)].max())


def test_bootstrap_equals_a_plain_resampling_loop():
    rng = np.random.default_rng(5)
    positives, negatives = rng.beta(4, 1, 60), rng.beta(1, 4, 500)
    fprs = (0.01, 0.1, 1e-3)
    bounds = bootstrap_tpr(positives, negatives, fprs, resamples=200, seed=11)
    plain = np.random.default_rng(11)
    draws = []
    for _ in range(200):
        pos = positives[plain.integers(0, 60, 60)]
        neg = negatives[plain.integers(0, 500, 500)]
        draws.append([tpr_at_fpr(pos, neg, f)["tpr"] for f in fprs[:2]])
    expected = np.quantile(np.array(draws), [0.025, 0.975], axis=0).T
    np.testing.assert_allclose(bounds[:2], expected, rtol=0, atol=1e-12)
    assert np.isnan(bounds[2]).all()  # FPR 1e-3 of 500 negatives: undefined
    point = tpr_at_fpr(positives, negatives, 0.1)["tpr"]
    assert bounds[1, 0] <= point <= bounds[1, 1]
    again = bootstrap_tpr(positives, negatives, fprs, resamples=200, seed=11)
    np.testing.assert_array_equal(bounds, again)


def test_fifteen_thousand_negatives_reach_fpr_1e4():
    rng = np.random.default_rng(2)
    positives, negatives = rng.beta(5, 1, 2000), rng.beta(1, 8, 15_000)
    rates = low_fpr_rates(positives, negatives, resamples=200)
    allowed = [e["allowed"] for e in rates["at_fpr"]]
    assert allowed == [150, 15, 1]
    for entry in rates["at_fpr"]:
        tpr, fp = brute_force(positives, negatives, entry["fpr"])
        assert (entry["tpr"], entry["false_positives"]) == (pytest.approx(tpr), fp)
        low, high = entry["interval"]
        assert low <= entry["tpr"] <= high
    assert rates["working_point"]["threshold"] == rates["at_fpr"][1]["threshold"]


def test_expected_candidates_and_their_interval():
    got = expected_candidates(15, 15_000, SURVEY_SIZES, confidence=0.95)
    ref = binomtest(15, 15_000).proportion_ci(method="exact")
    low, high = ref.low, ref.high
    lrg = got["KiDS DR4 LRG"]
    assert lrg["targets"] == 126_884
    assert lrg["expected"] == pytest.approx(126.884)
    assert lrg["interval"] == pytest.approx([126_884 * low, 126_884 * high], rel=1e-9)
    zero = expected_candidates(0, 15_000, {"LSST LRG": 2_300_000}, confidence=0.95)["LSST LRG"]
    assert zero["expected"] == 0 and zero["interval"][0] == 0 and zero["interval"][1] > 0


# --- binomial intervals and the selection function -------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 10), (3, 10), (10, 10), (1, 2000), (57, 60)])
@pytest.mark.parametrize("confidence", [0.68, 0.95])
def test_binomial_interval_is_clopper_pearson(k, n, confidence):
    low, high = binomial_interval(k, n, confidence=confidence)
    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    assert float(low) == pytest.approx(ref.low, abs=1e-12)
    assert float(high) == pytest.approx(ref.high, abs=1e-12)
    # the definition: each bound leaves (1 - confidence) / 2 of the binomial tail beyond k
    tail = (1 - confidence) / 2
    if k > 0:
        assert binom.sf(k - 1, n, float(low)) == pytest.approx(tail, rel=1e-6)
    if k < n:
        assert binom.cdf(k, n, float(high)) == pytest.approx(tail, rel=1e-6)


def test_binomial_interval_edges_and_errors():
    low, high = binomial_interval(np.array([0, 2, 0]), np.array([0, 4, 5]))
    assert np.isnan(low[0]) and np.isnan(high[0])
    assert low[2] == 0 and 0 < high[2] < 1
    with pytest.raises(ValueError, match="successes"):
        binomial_interval(5, 4)
    with pytest.raises(ValueError, match="confidence"):
        binomial_interval(1, 4, confidence=1.0)


def test_binned_completeness_has_an_interval_per_bin():
    values = np.array([1.0, 1.5, 1.7, 2.0, 5.0, 6.0, np.nan])
    scored = np.array([True, True, False, True, True, True, True])
    recovered = np.array([True, False, False, True, True, True, True])
    table = binned_completeness(values, scored, recovered, (1.0, 2.0, 5.0))
    assert table["lenses"].tolist() == [3, 2]
    assert table["scored"].tolist() == [2, 2]
    assert table["recovered"].tolist() == [1, 2]
    for row in table.itertuples():
        ref = binomtest(row.recovered, row.scored).proportion_ci(method="exact")
        assert (row.ci_low, row.ci_high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    empty = binned_completeness(np.array([3.0]), np.array([False]), np.array([False]), (1, 5))
    assert np.isnan(empty["completeness"][0]) and np.isnan(empty["ci_low"][0])


def test_selection_function_skips_quantities_without_values():
    n = 6
    quantities = {
        "theta_E": np.array([1.2, 1.4, 2.2, 2.5, 4.0, 4.5]),
        "host_mag": np.full(n, np.nan),
        "neighbours": np.array([0, 0, 1, 2, 3, 7], float),
        "unknown": np.ones(n),
    }
    found = np.array([1, 0, 1, 1, 0, 1], bool)
    bins = selection_function(quantities, np.ones(n, bool), found)
    assert list(dict.fromkeys(bins["quantity"])) == ["theta_E", "neighbours"]
    neighbours = bins[bins["quantity"] == "neighbours"]
    # bins [0,1) [1,2) [2,3) [3,5) [5,10]
    assert neighbours["scored"].tolist() == [2, 1, 1, 1, 1]
    assert neighbours["recovered"].tolist() == [1, 1, 1, 0, 1]


def test_neighbour_counts_match_astropy():
    rng = np.random.default_rng(3)
    cat_ra = 150 + rng.uniform(0, 0.02, 400)
    cat_dec = 2 + rng.uniform(0, 0.02, 400)
    counts = neighbour_counts(cat_ra[:50], cat_dec[:50], cat_ra, cat_dec, radius=5.0)
    catalog = SkyCoord(cat_ra * u.deg, cat_dec * u.deg)
    first, _, separation, _ = search_around_sky(catalog[:50], catalog, 5 * u.arcsec)
    expected = np.bincount(first[separation > 0 * u.deg], minlength=50)
    np.testing.assert_array_equal(counts, expected)
    assert counts.max() > 0


# --- in the metrics of a classifier --------------------------------------------------------


def mixed_set(seed: int = 4):
    """200 lenses, 1500 LRG and 500 ring negatives (rings score higher)."""
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.beta(5, 1, 200), rng.beta(1, 8, 1500), rng.beta(2, 3, 500)]
    labels = np.r_[np.ones(200, int), np.zeros(2000, int)]
    kinds = np.array(["lens"] * 200 + ["LRG"] * 1500 + ["ring"] * 500)
    theta = np.r_[rng.uniform(1, 5, 200), np.full(2000, np.nan)]
    return labels, scores, kinds, theta


def test_classifier_metrics_give_rates_for_the_mixed_set_and_the_lrgs():
    labels, scores, kinds, theta = mixed_set()
    metrics = classifier_metrics(labels, scores, kinds=kinds, parameters={"theta_E": theta})
    card = metrics.as_dict()
    assert set(card["low_fpr"]) == {ALL_SET, LRG_SET}
    positives = scores[:200]
    for name, negatives in ((ALL_SET, scores[200:]), (LRG_SET, scores[200:1700])):
        rates = card["low_fpr"][name]
        assert rates["negatives"] == negatives.size
        for entry in rates["at_fpr"]:
            expected = tpr_at_fpr(positives, negatives, entry["fpr"])
            assert entry["tpr"] == expected["tpr"]
    # the existing key is the same rate as the new one at 1e-2
    assert card["tpr_at_fpr_1pct"] == card["low_fpr"][ALL_SET]["at_fpr"][0]["tpr"]
    # rings are harder: the LRGs alone allow a lower threshold
    assert (
        card["low_fpr"][LRG_SET]["at_fpr"][0]["threshold"]
        < card["low_fpr"][ALL_SET]["at_fpr"][0]["threshold"]
    )
    completeness = card["completeness_by_bin"]
    point = card["low_fpr"][ALL_SET]["working_point"]
    assert completeness["threshold"] == point["threshold"]
    rows = completeness["bins"]["theta_E"]
    assert sum(r["scored"] for r in rows) == 200
    assert sum(r["recovered"] for r in rows) == int(np.sum(positives > point["threshold"]))
    assert json.loads(json.dumps(card)) == card
    # without kinds (or with LRGs only) there is one set, and the same numbers
    alone = classifier_metrics(labels[:1700], scores[:1700], kinds=kinds[:1700]).as_dict()
    plain = classifier_metrics(labels[:1700], scores[:1700]).as_dict()
    assert set(alone["low_fpr"]) == {ALL_SET} and alone == plain


def test_metrics_lines_print_the_low_fpr_rates():
    labels, scores, kinds, theta = mixed_set()
    card = classifier_metrics(labels, scores, kinds=kinds, parameters={"theta_E": theta})
    text = "\n".join(metrics_lines(card.as_dict(), "m0", "out"))
    rates = card.low_fpr[ALL_SET]
    first = rates["at_fpr"][0]
    assert f"all negatives (2000): TPR at FPR 1e-2 {first['tpr']:.3f}" in text
    assert f"({first['false_positives']} FP)" in text
    assert "1e-4 undefined (needs at least 10000 negatives" in text
    assert "LRG negatives (1500)" in text
    expected = rates["working_point"]["expected_candidates"]["KiDS DR4 LRG"]["expected"]
    assert f"KiDS DR4 LRG {expected:,.0f}" in text
    assert "by theta_E: 1-1.5: " in text


def test_roc_plot_has_a_log_fpr_panel(tmp_path):
    from lensdask.nn.evaluate import evaluate_scores

    labels, scores, kinds, theta = mixed_set()
    metrics = evaluate_scores(
        labels, scores, tmp_path, kinds=kinds, parameters={"theta_E": theta}, title="t"
    )
    for name in ("roc.png", "p_cnn_test.png", "completeness_test.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert metrics.completeness["bins"]["theta_E"]
    table = pd.DataFrame(metrics.completeness["bins"]["theta_E"])
    assert (table["ci_low"] <= table["completeness"]).all()
