"""Catalogs: the KiDS DR4 schema, ingest of FITS catalogs and the BG/LRG selection."""

from __future__ import annotations

from typing import Any

from lensdask.catalog.schema import CATALOG_COLUMNS, TARGET_COLUMNS

__all__ = ["CATALOG_COLUMNS", "TARGET_COLUMNS", "classify_targets", "colour_cuts", "target_masks"]


def __getattr__(name: str) -> Any:
    # The cuts import pandas (~0.5 s): every stage command imports lensdask.catalog.schema
    # for its errors, and only the selection needs the cuts.
    if name in ("classify_targets", "colour_cuts", "target_masks"):
        from lensdask.catalog import cuts

        return getattr(cuts, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
