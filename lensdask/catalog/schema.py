"""The catalog contract (docs/architecture.md, Contracts): KiDS DR4 column names and their
types."""

from __future__ import annotations

import types
from collections.abc import Mapping

CATALOG_COLUMNS: Mapping[str, str | None] = types.MappingProxyType(
    {
        "ID": "string",
        "RAJ2000": "float64",
        "DECJ2000": "float64",
        "THELI_NAME": "string",
        "SG2DPHOT": None,
        "MAG_AUTO": None,
        "COLOUR_GAAP_g_r": None,
        "COLOUR_GAAP_r_i": None,
        "Z_B": None,
    }
)
"""Columns every catalog has (KiDS DR4 names) and the Arrow type each is cast to (None: kept
as the catalog stores it, e.g. float32 magnitudes in KiDS, float64 elsewhere)."""

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


def contract_types(table):
    """Cast the columns of a pyarrow Table whose type the catalog contract fixes (ID, tile
    name: string; RA/Dec: float64) and leave the others as they are."""
    import pyarrow as pa

    fields = []
    for field in table.schema:
        kind = CATALOG_COLUMNS.get(field.name)
        fields.append(field.with_type(pa.type_for_alias(kind)) if kind else field)
    return table.cast(pa.schema(fields))
