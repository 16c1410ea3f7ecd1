"""The image index stage: which FITS file holds each tile's (or patch's) image of each band,
found by a name template, a manifest or a scan of the headers
(:mod:`lensdask.images.index`), and targets placed on images by their position
(:mod:`lensdask.images.match`). The index's format is :mod:`lensdask.formats.image_index`.
"""
