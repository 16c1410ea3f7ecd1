"""The test split's real negatives: many, of several kinds, kept out of training, with
their kind recorded; and the host quantities every example of a training set records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from lensdask.config import ConfigError, SimulateConfig
from lensdask.formats.trainset import read_hosts, read_table
from lensdask.lensing.simulate import HOST_PARAMETERS, plan_hash, plan_trainset, simulate_lenses
from lensdask.testing import write_cutout_store

KINDS = {"LRG": 400, "BG": 100, "ring": 30, "spiral": 60, "merger": 60}


def inventory() -> pd.DataFrame:
    kinds = np.concatenate([[kind] * n for kind, n in KINDS.items()])
    return pd.DataFrame(
        {"ID": [f"G{k:04d}" for k in range(kinds.size)], "tile": "T", "row": 0, "kind": kinds}
    )


def test_mixed_test_negatives_follow_their_share_and_stay_out_of_training():
    mix = {"LRG": 0.7, "ring": 0.1, "spiral": 0.1, "merger": 0.1}
    config = SimulateConfig(
        positives=50, negatives=120, test_positives=20, test_negatives=200, test_negative_mix=mix
    )
    notes: list[str] = []
    plan = plan_trainset(inventory(), config=config, notes=notes)
    test = plan[(plan["split"] == "test") & (plan["label"] == 0)]
    assert test["kind"].value_counts().to_dict() == {
        "LRG": 140,
        "ring": 20,
        "spiral": 20,
        "merger": 20,
    }
    assert test["ID"].is_unique  # distinct cutouts: no negative counted twice
    others = plan[plan["split"] != "test"]
    assert not set(test["ID"]) & set(others["ID"])
    lens_hosts = plan[(plan["split"] == "test") & (plan["label"] == 1)]
    assert set(lens_hosts["ID"]) <= set(test.loc[test["kind"] == "LRG", "ID"])
    assert notes == []


def test_too_few_cutouts_of_a_kind_are_all_taken_with_a_note():
    config = SimulateConfig(
        positives=10,
        negatives=20,
        test_positives=5,
        test_negatives=100,
        test_negative_mix={"LRG": 0.5, "ring": 0.5},
    )
    notes: list[str] = []
    plan = plan_trainset(inventory(), config=config, notes=notes)
    test = plan[(plan["split"] == "test") & (plan["label"] == 0)]
    assert (test["kind"] == "ring").sum() == KINDS["ring"]
    assert any("50 ring negatives asked, 30 cutouts" in note for note in notes)
    # every ring went to the test split, so training has none (and says so)
    assert not (plan[plan["split"] != "test"]["kind"] == "ring").any()


def test_the_default_mix_is_a_test_split_of_lrgs():
    base = SimulateConfig(positives=30, negatives=40, test_positives=10, test_negatives=50)
    explicit = SimulateConfig(
        positives=30,
        negatives=40,
        test_positives=10,
        test_negatives=50,
        test_negative_mix={"LRG": 2.0, "ring": 0.0},
    )
    plan = plan_trainset(inventory(), config=base)
    assert plan_hash(plan) == plan_hash(plan_trainset(inventory(), config=explicit))
    test = plan[(plan["split"] == "test") & (plan["label"] == 0)]
    assert set(test["kind"]) == {"LRG"} and len(test) == 50


@pytest.mark.parametrize(
    ("mix", "message"),
    [({"ring": 1.0}, "with LRG > 0"), ({"LRG": 1.0, "comet": 0.1}, "unknown"), ({"LRG": -1}, "")],
)
def test_bad_test_mix_is_refused(mix, message):
    with pytest.raises(ConfigError, match="simulate.test_negative_mix: .*" + message):
        SimulateConfig(test_negative_mix=mix)


def test_training_set_records_kinds_and_host_quantities(tmp_path, client):
    tiles = {"KIDS_1.0_0.5": {"LRG": 24, "BG": 16}}
    store = write_cutout_store(tmp_path / "c.zarr", tiles, seed=2)
    group = zarr.open_group(str(store / "KIDS_1.0_0.5"), mode="r")
    ids = np.array([str(v) for v in group["ID"][:]])
    samples = np.array([str(v) for v in group["sample"][:]])
    kinds = np.where(samples == "LRG", "red", np.where(np.arange(ids.size) % 2, "ring", "blue"))
    targets = pd.DataFrame(
        {
            "ID": ids,
            "RAJ2000": 10 + np.arange(ids.size) * 1e-2,  # 36" apart
            "DECJ2000": np.where(np.arange(ids.size) < 2, 0.0, 1.0),  # two neighbours
            "MAG_AUTO": np.linspace(16, 21, ids.size),
            "R_EFF": np.linspace(0.3, 3, ids.size),
            "TRUE_TYPE": kinds,
            "TRUE_LENS": False,
        }
    )
    targets.loc[1, "RAJ2000"] = targets.loc[0, "RAJ2000"] + 2 / 3600
    (tmp_path / "targets").mkdir()
    targets.to_parquet(tmp_path / "targets" / "part-0.parquet")
    config = SimulateConfig(
        positives=8,
        negatives=8,
        test_positives=4,
        test_negatives=10,
        test_negative_mix={"LRG": 0.6, "ring": 0.4},
        batch_size=16,
    )
    report = simulate_lenses(
        store,
        tmp_path / "t.zarr",
        config=config,
        client=client,
        targets=tmp_path / "targets",
        progress=False,
    )
    assert report.units.ok, report.units.failures
    table = read_table(report.out, "test")
    hosts = read_hosts(report.out, "test")
    assert list(hosts.columns) == list(HOST_PARAMETERS) and len(hosts) == len(table)
    assert table.loc[table["label"] == 0, "kind"].value_counts().to_dict() == {"LRG": 6, "ring": 4}
    truth = targets.set_index("ID").loc[table["source_id"]]
    np.testing.assert_array_equal(hosts["host_mag"], truth["MAG_AUTO"].to_numpy())
    np.testing.assert_array_equal(hosts["host_size"], truth["R_EFF"].to_numpy())
    expected = np.where(np.isin(table["source_id"], ids[:2]), 1.0, 0.0)
    np.testing.assert_array_equal(hosts["neighbours"], expected)
    assert hosts["seeing"].isna().all()  # the factory's cutout store records no seeing
