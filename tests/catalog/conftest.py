"""The reference selection for the catalog tests: the cuts of Li et al. (2020) written out in
DuckDB SQL.

It shares no code with :mod:`lensdask.catalog`: the cuts are typed in again from Li et al.
(2020), as docs/architecture.md (The science in numbers) lists them, evaluated by DuckDB in
DOUBLE on a pandas frame or on Parquet files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pytest

from lensdask.config import SelectConfig

Source = pd.DataFrame | Path | Sequence[Path]


def cuts_sql(relation: str, config: SelectConfig) -> str:
    """DuckDB SQL selecting the BGs of ``relation`` with their ``sample`` and a NaN-colour flag.

    BG: ``SG2DPHOT = 0 AND MAG_AUTO <= bg_mag_max``. LRG, additionally:
    ``MAG_AUTO < 14 + c_par/0.3 AND abs(c_perp) < c_perp_max AND MAG_AUTO <= lrg_mag_max``
    with ``c_par = 0.7*g_r + 1.2*(r_i - 0.18)`` and ``c_perp = r_i - g_r/4.0 - 0.18``. A NaN
    (or NULL) colour is never an LRG. With ``mask_bits`` nonzero, additionally
    ``MASK & mask_bits = 0`` (a NULL ``MASK`` as 0).
    """
    mask = (
        f"AND (coalesce(CAST(MASK AS BIGINT), 0) & {int(config.mask_bits)}) = 0"
        if config.mask_bits
        else ""
    )
    return f"""
        WITH cast_ AS (
            SELECT *,
                CAST(MAG_AUTO AS DOUBLE) AS mag_,
                CAST(COLOUR_GAAP_g_r AS DOUBLE) AS g_r_,
                CAST(COLOUR_GAAP_r_i AS DOUBLE) AS r_i_
            FROM {relation}
        ), colours_ AS (
            SELECT *,
                0.7 * g_r_ + 1.2 * (r_i_ - 0.18) AS c_par_,
                r_i_ - g_r_ / 4.0 - 0.18 AS c_perp_,
                coalesce(isnan(g_r_) OR isnan(r_i_), true) AS nan_colour
            FROM cast_
        )
        SELECT * EXCLUDE (mag_, g_r_, r_i_, c_par_, c_perp_),
            CASE WHEN NOT nan_colour
                AND mag_ < 14 + c_par_ / 0.3
                AND abs(c_perp_) < {config.c_perp_max!r}
                AND mag_ <= {config.lrg_mag_max!r}
            THEN 'LRG' ELSE 'BG' END AS sample
        FROM colours_
        WHERE SG2DPHOT = 0 AND mag_ <= {config.bg_mag_max!r} {mask}
    """


def reference_targets(source: Source, config: SelectConfig | None = None) -> pd.DataFrame:
    """The BGs of ``source`` (a catalog frame, or Parquet file(s)/folder) selected by DuckDB.

    Returns every source column plus ``sample`` and ``nan_colour``; for Parquet input also
    ``unit``, the stem of the file each row came from.
    """
    import duckdb

    config = config or SelectConfig()
    with duckdb.connect() as con:
        if isinstance(source, pd.DataFrame):
            con.register("catalog_", source)
            return con.sql(cuts_sql("catalog_", config)).df()
        if isinstance(source, Path):
            paths = [str(source / "*.parquet")] if source.is_dir() else [str(source)]
        else:
            paths = [str(path) for path in source]
        relation = f"read_parquet({paths!r}, filename = true)"
        frame = con.sql(cuts_sql(relation, config)).df()
    frame["unit"] = [Path(name).stem for name in frame.pop("filename")]
    return frame


@pytest.fixture(scope="session")
def duckdb_targets() -> Callable[..., pd.DataFrame]:
    """:func:`reference_targets`: the cuts of Li et al. (2020) evaluated by DuckDB."""
    return reference_targets
