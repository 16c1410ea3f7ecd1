"""lensdask: find strong gravitational lenses in wide imaging surveys with Dask.

Importing the package is cheap: it imports neither TensorFlow, Keras, dask-cuda nor
dask-jobqueue. Each stage lives in its own subpackage (:mod:`lensdask.catalog`,
:mod:`lensdask.mock`, ...) and is also a ``lensdask`` command.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lensdask")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
