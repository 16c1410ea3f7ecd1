"""Strong-lensing simulation: pure, batched NumPy kernels and the training-set job.

- :mod:`lensdask.lensing.profiles`: SIE and external-shear deflections, elliptical Sersic
  surface brightness, in lenstronomy's parameter conventions (angles in arcsec).
- :mod:`lensdask.lensing.grf`: Gaussian-random-field perturbations of the lens potential.
- :mod:`lensdask.lensing.image`: ray-shooting on a supersampled grid, pixel integration and
  PSF convolution of a batch of lens systems.
- :mod:`lensdask.lensing.mocks`: drawing mock-lens parameters and painting arcs on cutouts.
- :mod:`lensdask.lensing.simulate`: the Dask job that writes ``trainset.zarr``.
- :mod:`lensdask.lensing.figures`: the figure of example lenses and negatives.
"""
