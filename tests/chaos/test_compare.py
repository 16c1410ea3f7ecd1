"""The comparison of the chaos suite counts what it should: rows lost, duplicated, stale."""

from __future__ import annotations

import numpy as np
import pandas as pd
from compare import compare, diff_rows, frame_rows


def table(ids, values) -> pd.DataFrame:
    return pd.DataFrame({"ID": ids, "p_cnn": np.asarray(values, dtype=np.float32)})


def test_lost_duplicated_and_stale_rows_are_counted():
    clean = frame_rows(table(["a", "b", "c"], [0.1, 0.2, 0.3]), "ID")
    same = frame_rows(table(["a", "b", "c"], [0.1, 0.2, 0.3]), "ID")
    assert diff_rows("t", clean, same).ok
    # b lost; c one float32 step off (and moved up a row), d not in the clean run: stale
    here = frame_rows(table(["a", "c", "d"], [0.1, np.nextafter(np.float32(0.3), 1), 0.4]), "ID")
    diff = diff_rows("t", clean, here)
    assert (diff.lost, diff.duplicated) == (1, 0)
    assert diff.stale == 2


def test_a_repeated_row_and_another_type_are_found():
    clean = frame_rows(table(["a", "b"], [0.1, 0.2]), "ID")
    twice = pd.concat([clean, clean.iloc[[1]]], ignore_index=True)
    assert diff_rows("t", clean, twice).duplicated == 1
    wider = table(["a", "b"], [0.1, 0.2]).astype({"p_cnn": np.float64})
    diff = diff_rows("t", clean, frame_rows(wider, "ID"))
    assert diff.stale == 3  # the schema row and both rows (their bytes)


def test_an_output_on_one_side_only_is_all_lost_or_all_stale():
    rows = frame_rows(table(["a"], [0.1]), "ID")
    diffs = {d.output: d for d in compare({"x": rows}, {"y": rows})}
    assert diffs["x"].lost == 2 and diffs["y"].stale == 2
