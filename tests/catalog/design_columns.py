"""Column lists typed in from the catalog contract of docs/architecture.md (KiDS DR4 names,
as in Li et al. 2020), shared by the catalog tests (not taken from lensdask, so that the
tests check the code against the contract)."""

CATALOG = [
    "ID",
    "RAJ2000",
    "DECJ2000",
    "THELI_NAME",
    "SG2DPHOT",
    "MAG_AUTO",
    "COLOUR_GAAP_g_r",
    "COLOUR_GAAP_r_i",
    "Z_B",
]
"""The catalog columns, typed in from the contract (not taken from lensdask)."""

CONTRACT = [*CATALOG, "sample"]
"""Columns of the targets table: the catalog columns plus ``sample``."""
