"""Simulated graders: their error rates (binomial tolerance on 2000 draws a grader),
determinism, the truth of a mock survey's catalog, and the command into the grades
database."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scipy import stats

from lensdask.cli import main
from lensdask.formats.files import TableError
from lensdask.mock.survey import tile_catalog
from lensdask.mock.tiles import survey_tiles
from lensdask.review.grades import GradeStore
from lensdask.review.simulated import read_lens_truth, simulate_grades, verdict_rates
from lensdask.testing import small_survey_config

IDS = [f"KiDS J{k:06d}.000+000000.00" for k in range(2000)]
IS_LENS = np.arange(2000) % 2 == 0  # 1000 lenses, 1000 non-lenses


def within_binomial(successes: int, n: int, p: float) -> bool:
    """Whether ``successes`` of ``n`` is inside the central 99.99% of Binomial(n, p)."""
    low, high = stats.binom.interval(0.9999, n, p)
    return low <= successes <= high


@pytest.mark.parametrize(("p", "q"), [(0.8, 0.9), (0.6, 0.97)])
def test_error_rates_of_every_simulated_grader_are_p_and_q(p, q):
    grades = simulate_grades(IDS, IS_LENS, graders=3, p=p, q=q, seed=11)
    assert len(grades) == 3 * len(IDS)
    assert sorted(grades["grader"].unique()) == ["sim:1", "sim:2", "sim:3"]
    rates = verdict_rates(grades, pd.Series(IS_LENS, index=IDS))
    for _, row in rates.iterrows():
        assert row["lenses"] == 1000 and row["non_lenses"] == 1000
        assert within_binomial(row["lenses_ab"], 1000, p)
        assert within_binomial(row["non_lenses_cd"], 1000, q)
    # within a verdict both letters are equally likely (counted independently here)
    letters = grades["grade"].value_counts()
    assert within_binomial(letters["A"], letters["A"] + letters["B"], 0.5)
    assert within_binomial(letters["D"], letters["C"] + letters["D"], 0.5)
    # graders err independently: two agree on a lens with probability p^2 + (1 - p)^2
    wide = grades.pivot(index="candidate_id", columns="grader", values="grade").loc[IDS]
    says = wide.isin(["A", "B"]).to_numpy()
    agree = int((says[IS_LENS, 0] == says[IS_LENS, 1]).sum())
    assert within_binomial(agree, 1000, p**2 + (1 - p) ** 2)


def test_grades_are_seeded_and_do_not_move_when_candidates_change():
    first = simulate_grades(IDS, IS_LENS, graders=2, p=0.7, q=0.7, seed=3)
    assert first.equals(simulate_grades(IDS, IS_LENS, graders=2, p=0.7, q=0.7, seed=3))
    other = simulate_grades(IDS, IS_LENS, graders=2, p=0.7, q=0.7, seed=4)
    assert (first["grade"] != other["grade"]).mean() > 0.3
    # half the candidates, in reverse order: each keeps its grades
    part = simulate_grades(IDS[::-2], IS_LENS[::-2], graders=2, p=0.7, q=0.7, seed=3)
    key = ["candidate_id", "grader"]
    merged = part.merge(first, on=key, suffixes=("", "_all"))
    assert len(merged) == len(part) and (merged["grade"] == merged["grade_all"]).all()


def test_perfect_and_contrary_graders():
    right = simulate_grades(IDS[:50], IS_LENS[:50], graders=1, p=1.0, q=1.0)
    assert (right["grade"].isin(["A", "B"]).to_numpy() == IS_LENS[:50]).all()
    wrong = simulate_grades(IDS[:50], IS_LENS[:50], graders=1, p=0.0, q=0.0)
    assert (wrong["grade"].isin(["A", "B"]).to_numpy() == ~IS_LENS[:50]).all()
    with pytest.raises(ValueError, match=r"p: a probability in \[0, 1\], got 1.5"):
        simulate_grades(IDS[:5], IS_LENS[:5], graders=1, p=1.5, q=0.5)
    with pytest.raises(ValueError, match="at least 1 simulated grader"):
        simulate_grades(IDS[:5], IS_LENS[:5], graders=0, p=0.5, q=0.5)


@pytest.fixture(scope="module")
def mock_catalog(tmp_path_factory):
    """Two tiles of a mock survey's catalog with injected lenses and many spirals, rings
    and mergers (the catalog only: lenses are chosen there, painted with the images)."""
    config = small_survey_config(
        tiles=2,
        tile_size=0.3,
        images=True,
        density=30_000.0,
        lrg_density=2000.0,
        lens_fraction=0.5,
        lens_bg_fraction=0.05,
        spiral_fraction=0.2,
        ring_fraction=0.2,
        merger_fraction=0.2,
    )
    folder = tmp_path_factory.mktemp("mock") / "catalog"
    folder.mkdir()
    frames = []
    for tile in survey_tiles(config.tiles):
        table = tile_catalog(tile, config=config)
        pq.write_table(table, folder / f"{tile.name}.parquet")
        frames.append(table.to_pandas())
    return folder, pd.concat(frames, ignore_index=True)


def test_truth_comes_from_the_catalog_by_id_and_gaps_are_named(mock_catalog):
    folder, catalog = mock_catalog
    kinds = catalog["TRUE_TYPE"].astype(str)
    assert catalog["TRUE_LENS"].sum() >= 50 and kinds.isin(["spiral", "ring", "merger"]).sum() > 30
    sample = catalog.sample(300, random_state=1)
    assert (read_lens_truth(folder, sample["ID"]) == sample["TRUE_LENS"].to_numpy()).all()
    with pytest.raises(TableError) as err:
        read_lens_truth(folder, [sample["ID"].iloc[0], "KiDS J9", "KiDS J8"])
    assert "row 2: candidate 'KiDS J9' has no TRUE_LENS" in str(err.value)
    assert "row 3: candidate 'KiDS J8'" in str(err.value)
    plain = folder.parent / "plain.parquet"
    catalog[["ID", "MAG_AUTO"]].to_parquet(plain)
    with pytest.raises(TableError, match="no TRUE_LENS column; simulated graders need"):
        read_lens_truth(plain, sample["ID"])


def test_simulate_graders_command_stores_the_grades_with_their_source(mock_catalog, tmp_path):
    folder, catalog = mock_catalog
    galaxies = catalog[catalog["TRUE_TYPE"].astype(str) != "star"]
    confusing = galaxies["TRUE_TYPE"].astype(str).isin(["spiral", "ring", "merger"])
    chosen = pd.concat(
        [galaxies[galaxies["TRUE_LENS"]], galaxies[confusing], galaxies.iloc[:200]]
    ).drop_duplicates("ID")
    candidates = tmp_path / "candidates.parquet"
    chosen[["ID"]].assign(p_cnn=0.9).to_parquet(candidates)
    db = tmp_path / "grades.sqlite"
    args = ["simulate-graders", candidates, "--truth", folder, "--db", db]
    args += ["--graders", "2", "--p-lens", "0.75", "--q-non-lens", "0.95", "--seed", "5"]
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    store = GradeStore(db)
    grades = store.grades()
    assert len(grades) == 2 * len(chosen) and set(grades["source"]) == {"simulated"}
    assert sorted(store.progress()) == ["sim:1", "sim:2"]
    lens = grades["candidate_id"].map(chosen.set_index("ID")["TRUE_LENS"]).astype(bool)
    n_lens = int(chosen["TRUE_LENS"].sum())
    for name in ("sim:1", "sim:2"):
        mine = grades["grader"] == name
        ab = int((mine & lens & grades["grade"].isin(["A", "B"])).sum())
        cd = int((mine & ~lens & grades["grade"].isin(["C", "D"])).sum())
        assert within_binomial(ab, n_lens, 0.75)
        assert within_binomial(cd, len(chosen) - n_lens, 0.95)
        assert f"{name}: {ab} of {n_lens} lenses graded A/B, {cd} of" in result.output
    # the same command again gives the same grades (seeded), stored once
    again = CliRunner().invoke(main, [str(arg) for arg in args])
    assert again.exit_code == 0
    assert store.grades()[["candidate_id", "grader", "grade"]].equals(
        grades[["candidate_id", "grader", "grade"]]
    )


def test_simulated_graders_refuse_candidates_without_stamps(review_data, tmp_path):
    ids = review_data.candidates["ID"].tolist()
    candidates = tmp_path / "candidates.csv"
    pd.DataFrame({"ID": [*ids, "KiDS J999999.999+000000.00"]}).to_csv(candidates, index=False)
    truth = tmp_path / "truth.parquet"
    pd.DataFrame({"ID": [*ids, "KiDS J999999.999+000000.00"], "TRUE_LENS": False}).to_parquet(truth)
    args = ["simulate-graders", candidates, "--truth", truth, "--db", tmp_path / "g.sqlite"]
    result = CliRunner().invoke(main, [str(arg) for arg in [*args, "--stamps", review_data.stamps]])
    assert result.exit_code == 1
    assert (
        f"row {len(ids) + 1}: candidate 'KiDS J999999.999+000000.00' has no cutout" in result.output
    )
    assert GradeStore(tmp_path / "g.sqlite").grades().empty


@pytest.mark.slow
def test_the_review_loop_runs_without_people(mock_catalog, tmp_path, client):
    """Scores made from the truth (lenses high, the confusing kinds in between), the
    candidates with a random exploration below the threshold, three simulated graders into
    the grades database, its export, and the ranking with the exploration kept apart."""
    from lensdask.config import CandidateConfig
    from lensdask.score.candidates import select_candidates

    folder, catalog = mock_catalog
    targets = catalog[(catalog["SG2DPHOT"] == 0) & (catalog["MAG_AUTO"] <= 21)].copy()
    rng = np.random.default_rng(0)
    lens = targets["TRUE_LENS"].to_numpy()
    confusing = targets["TRUE_TYPE"].astype(str).isin(["spiral", "ring", "merger"]).to_numpy()
    targets["p_cnn"] = np.where(
        lens,
        rng.beta(8, 1.5, len(targets)),
        np.where(confusing, rng.beta(3, 2, len(targets)), rng.beta(0.3, 6, len(targets))),
    ).astype(np.float32)
    scores = tmp_path / "scores"
    scores.mkdir()
    for tile, part in targets.assign(sample="BG", model_id="m0").groupby("THELI_NAME"):
        part[["ID", "THELI_NAME", "sample", "p_cnn", "model_id"]].to_parquet(
            scores / f"{tile}.parquet", index=False
        )
    candidates = tmp_path / "candidates.parquet"
    config = CandidateConfig(thresholds={"BG": 0.8}, explore=60, explore_seed=2)
    select_candidates(scores, candidates, config=config, client=client, progress=False)
    table = pd.read_parquet(candidates)
    explored = set(table["ID"][table["explore"]])
    assert len(explored) == 60

    db, export, ranking = tmp_path / "grades.sqlite", tmp_path / "all.csv", tmp_path / "r.csv"
    runner = CliRunner()
    for args in (
        ["simulate-graders", candidates, "--truth", folder, "--db", db, "--graders", "3"],
        ["inspect", "export", "--db", db, "--out", export],
        ["rank", "--scores", candidates, "--grades", export, "--out", ranking],
    ):
        result = runner.invoke(main, [str(arg) for arg in args])
        assert result.exit_code == 0, result.output
    ranked = pd.read_csv(ranking)
    apart = pd.read_csv(ranking.with_name("r_exploration.csv"))
    assert set(apart["candidate_id"]) == explored
    assert set(ranked["candidate_id"]) == set(table["ID"]) - explored
    truth = targets.set_index("ID")["TRUE_LENS"]
    good = ranked[ranked["quality"] != "low"]
    # graders right 90% of the time each: the high-quality candidates are the lenses
    assert truth[good["candidate_id"]].mean() > 0.9
    found_lenses = truth[ranked["candidate_id"]]
    assert truth[good["candidate_id"]].sum() > 0.8 * found_lenses.sum()
