"""`lensdask candidates --truth` with targets: the completeness by seeing, host magnitude,
host size and neighbours within 5", each bin with its Clopper-Pearson interval, checked
against direct counts, SciPy and astropy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from scipy.stats import binomtest
from test_candidates import truth_and_scores

from lensdask.config import CandidateConfig
from lensdask.score.candidates import select_candidates
from lensdask.selection import QUANTITIES


def test_completeness_by_host_quantities_and_seeing(client, tmp_path):
    truth_dir, scores, truth = truth_and_scores(tmp_path)
    seeing = np.array([0.55, 0.65, 0.65, 0.75, 0.75, 0.9, 0.9, 1.2, 0.5, 0.7])
    for name, part in (("KIDS_0.0_0.5", slice(0, 6)), ("KIDS_1.0_0.5", slice(6, 10))):
        truth[part].assign(seeing=seeing[part]).to_parquet(truth_dir / f"{name}.parquet")
    every = pd.read_parquet(scores)
    rng = np.random.default_rng(0)
    targets = every[["ID"]].assign(
        RAJ2000=10 + np.arange(len(every)) * 1e-2,
        DECJ2000=-1.0,
        MAG_AUTO=rng.uniform(15, 21, len(every)),
        R_EFF=rng.uniform(0.2, 4.0, len(every)),
    )
    lens_rows = targets["ID"].str.startswith("L").to_numpy()
    targets.loc[lens_rows, "MAG_AUTO"] = [16.5, 17.5, 18.5, 19.5, 20.5, 16.0, 17.2, 20.9]
    # crowd L1 with three galaxies within 5" (one at 4.9"), and one more at 5.2"
    l1 = targets.index[targets["ID"] == "L1"][0]
    crowd = targets.index[targets["ID"].isin(["G0", "G1", "G2", "G3"])]
    offsets = np.array([1.0, 3.0, 4.9, 5.2]) / 3600
    targets.loc[crowd, "RAJ2000"] = targets.loc[l1, "RAJ2000"]
    targets.loc[crowd, "DECJ2000"] = targets.loc[l1, "DECJ2000"] + offsets
    targets.to_parquet(tmp_path / "targets.parquet")

    out = tmp_path / "cands" / "candidates.parquet"
    config = CandidateConfig(theta_e_bins=(1.0, 2.0, 5.0), arc_ratio_bins=(0.02, 0.1, 0.3))
    select_candidates(
        scores,
        out,
        config=config,
        client=client,
        truth=truth_dir,
        targets=tmp_path / "targets.parquet",
        progress=False,
    )
    table = pd.read_csv(tmp_path / "cands" / "candidates_completeness.csv")
    assert list(dict.fromkeys(table["quantity"])) == list(QUANTITIES)
    lenses = pd.read_parquet(tmp_path / "cands" / "candidates_lenses.parquet").set_index("ID")
    scored = lenses["p_cnn"].notna()
    recovered = lenses["recovered"]

    host = targets.set_index("ID").reindex(lenses.index)
    catalog = SkyCoord(
        targets["RAJ2000"].to_numpy() * u.deg, targets["DECJ2000"].to_numpy() * u.deg
    )
    neighbours = []
    for ra, dec in zip(host["RAJ2000"], host["DECJ2000"], strict=True):
        if np.isnan(ra):
            neighbours.append(np.nan)
            continue
        separation = SkyCoord(ra * u.deg, dec * u.deg).separation(catalog).to_value(u.arcsec)
        neighbours.append(int(((separation > 0) & (separation <= 5)).sum()))
    direct = {
        "seeing": seeing,
        "host_mag": host["MAG_AUTO"].to_numpy(),
        "host_size": host["R_EFF"].to_numpy(),
        "neighbours": np.array(neighbours, dtype=float),
    }
    assert direct["neighbours"][1] == 3
    for name, values in direct.items():
        rows = table[table["quantity"] == name]
        edges = QUANTITIES[name].edges
        for row in rows.itertuples():
            inside = (values >= row.low) & (
                (values <= row.high) if row.high == edges[-1] else (values < row.high)
            )
            assert row.scored == int((inside & scored).sum()), (name, row.low)
            assert row.recovered == int((inside & recovered).sum()), (name, row.low)
            if row.scored:
                ci = binomtest(row.recovered, row.scored).proportion_ci(method="exact")
                assert (row.ci_low, row.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
                assert row.ci_low <= row.completeness <= row.ci_high
            else:
                assert np.isnan(row.completeness) and np.isnan(row.ci_low)
    assert (tmp_path / "cands" / "candidates_completeness.png").stat().st_size > 10_000


def test_without_targets_only_the_lens_quantities_are_binned(client, tmp_path):
    truth_dir, scores, _ = truth_and_scores(tmp_path)
    out = tmp_path / "candidates.parquet"
    select_candidates(scores, out, client=client, truth=truth_dir, progress=False)
    table = pd.read_csv(tmp_path / "candidates_completeness.csv")
    assert list(dict.fromkeys(table["quantity"])) == ["theta_E", "arc_peak_ratio"]
    assert {"ci_low", "ci_high"} <= set(table)
