"""Cutouts: 101x101 stamps from FITS tile images into a Zarr store, one Dask task per tile."""
