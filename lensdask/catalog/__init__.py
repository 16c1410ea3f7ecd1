"""Catalogs: the KiDS DR4 schema, ingest of FITS catalogs and the BG/LRG selection."""

from lensdask.catalog.cuts import classify_targets, colour_cuts, target_masks
from lensdask.catalog.schema import CATALOG_COLUMNS, TARGET_COLUMNS

__all__ = ["CATALOG_COLUMNS", "TARGET_COLUMNS", "classify_targets", "colour_cuts", "target_masks"]
