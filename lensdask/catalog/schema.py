"""The catalog contract of DESIGN.md: KiDS DR4 column names and their types."""

from __future__ import annotations

import types
from collections.abc import Mapping

CATALOG_COLUMNS: Mapping[str, str] = types.MappingProxyType(
    {
        "ID": "string",
        "RAJ2000": "float64",
        "DECJ2000": "float64",
        "THELI_NAME": "string",
        "SG2DPHOT": "int32",
        "MAG_AUTO": "float32",
        "COLOUR_GAAP_g_r": "float32",
        "COLOUR_GAAP_r_i": "float32",
        "Z_B": "float32",
    }
)
"""Columns every catalog has (KiDS DR4 names) and their Arrow types."""

SELECTION_COLUMNS = ("SG2DPHOT", "MAG_AUTO", "COLOUR_GAAP_g_r", "COLOUR_GAAP_r_i")
"""Columns the BG/LRG cuts read."""

TARGET_COLUMNS = (*CATALOG_COLUMNS, "sample")
"""Columns of the targets table: the catalog contract plus ``sample`` (``LRG``/``BG``)."""

SAMPLES = ("LRG", "BG")
"""Values of the ``sample`` column; an LRG is listed once, as ``LRG``."""


class SchemaError(ValueError):
    """A catalog file lacks a column or has one of the wrong type."""


def check_columns(present: list[str] | tuple[str, ...], needed: list[str], *, source: str) -> None:
    """Raise :class:`SchemaError` naming the first missing column and the file.

    Parameters
    ----------
    present : sequence of str
        Column names the file has.
    needed : sequence of str
        Column names the stage reads.
    source : str
        The file (or dataset) they come from, for the message.
    """
    missing = [name for name in needed if name not in present]
    if missing:
        raise SchemaError(
            f"{source}: missing column(s) {', '.join(missing)} (has: {', '.join(present)})"
        )
