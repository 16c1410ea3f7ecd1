"""A mock KiDS-like survey: catalog in the KiDS DR4 schema and FITS tile images.

No real survey data can be downloaded where lensdask is developed and tested, and every
stage needs realistic input; this package makes it, deterministically for a given seed.
"""
