"""Opening FITS images lazily, from a local path or an fsspec URL (``s3://bucket/key``,
``memory://``), so that only the bytes asked for are read.

A local file is opened by astropy as it is. A URL is opened as an fsspec file with a
read-ahead cache of ``block_size`` bytes and handed to astropy as a file object: astropy
then reads the headers it is asked for, and the rows of an image's ``section`` (for a
tile-compressed image: its table of tiles, then the compressed bytes of the tiles asked
for), each as a byte range. The cache holds one range read plus one block, so a worker's
memory does not grow with the file, and a reader moving forward through the file never
fetches a byte twice. The file object is closed with the :class:`~astropy.io.fits.HDUList`.

Credentials and endpoint come from ``storage_options`` (fsspec's; for s3fs ``key``,
``secret``, ``client_kwargs={"endpoint_url": ...}``), else from where fsspec looks (the
``AWS_*`` environment variables, configuration files). Dask workers are other processes:
pass ``storage_options`` explicitly to code that runs there.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lensdask.storage import is_url

HEADER_BLOCK_SIZE = 2**18
"""Bytes fetched per request where only headers are read (256 KiB: a survey image's primary
and image headers in one request, and little more)."""

ROWS_BLOCK_SIZE = 2**22
"""Bytes fetched per request, at least, where pixel rows are read (4 MiB: about 50 rows of a
21000 px float32 image; a tile-compressed image's many small tile reads come from the cache,
one request per block)."""

NETWORK_MODULES = ("aiohttp", "botocore", "aiobotocore", "urllib3", "requests", "google")
"""Packages whose exceptions mean that a store could not be reached or did not answer."""


def is_network_error(err: BaseException) -> bool:
    """Whether ``err`` is a failure to reach a store or to get its answer (a connection
    refused or lost, a timeout), which another attempt may not meet: the built-in
    :class:`ConnectionError` and :class:`TimeoutError`, or an exception of the network
    packages fsspec's stores use (:data:`NETWORK_MODULES`), which are not :class:`OSError`
    (botocore's ``EndpointConnectionError``)."""
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    return any(kind.__module__.split(".")[0] in NETWORK_MODULES for kind in type(err).__mro__[:-1])


def open_fits(
    location: str | Path | Any,
    *,
    storage_options: Mapping[str, Any] | None = None,
    block_size: int = ROWS_BLOCK_SIZE,
):
    """A FITS file opened lazily: headers read when their HDU is asked for, pixels when
    they are touched.

    Parameters
    ----------
    location : str, path or upath.UPath
        A local path, or an fsspec URL (``s3://bucket/key.fits.fz``; a
        :class:`upath.UPath` brings its own file system and options).
    storage_options : mapping, optional
        fsspec options of a URL (credentials, endpoint); ignored for local paths and for a
        ``UPath``.
    block_size : int, bytes
        For a URL: the least a request fetches (the read-ahead cache's block).

    Returns
    -------
    astropy.io.fits.HDUList
        To close when done; :meth:`~astropy.io.fits.HDUList.filename` is the path or URL.

    Raises
    ------
    FileNotFoundError
        Nothing at ``location`` (a missing file, key or bucket); the message names it.
    ConnectionError
        The store cannot be reached; the message names the URL and the cause.
    ImportError
        The URL's protocol needs a package that is not installed (``s3://``: the ``s3``
        extra).
    """
    from astropy.io import fits

    if not is_url(location):
        return fits.open(location, memmap=False, lazy_load_hdus=True)
    file = open_remote(location, storage_options=storage_options, block_size=block_size)
    try:
        return fits.open(file, memmap=False, lazy_load_hdus=True)
    except BaseException:
        file.close()
        raise


def open_remote(
    location: str | Any,
    *,
    storage_options: Mapping[str, Any] | None = None,
    block_size: int = ROWS_BLOCK_SIZE,
):
    """A binary file object of the fsspec URL ``location`` that reads byte ranges on
    demand, through a read-ahead cache of ``block_size`` bytes (see :func:`open_fits` for
    the parameters and errors). Its ``name`` is the URL."""
    if block_size < 1:
        raise ValueError(f"block_size: must be >= 1 byte, got {block_size}")
    if hasattr(location, "fs") and hasattr(location, "path"):  # a UPath
        fs, path = location.fs, location.path
        name = f"{location.protocol}://{location.path.lstrip('/')}"
    else:
        from fsspec.core import url_to_fs

        name = str(location)
        try:
            fs, path = url_to_fs(name, **dict(storage_options or {}))
        except ImportError as err:  # fsspec: "Install s3fs to access S3"
            raise ImportError(
                f"{name}: {err}; for s3:// URLs: pip install 'lensdask[s3]'"
            ) from None
    try:
        file = fs.open(path, "rb", block_size=block_size, cache_type="readahead")
    except FileNotFoundError as err:  # s3fs names a missing key by its path, a bucket not
        raise FileNotFoundError(errno.ENOENT, _cause(err, path, "no such file"), name) from None
    except PermissionError as err:
        raise PermissionError(errno.EACCES, _cause(err, path, "access denied"), name) from None
    except Exception as err:
        if not is_network_error(err):
            raise
        raise ConnectionError(f"{name}: cannot be reached: {type(err).__name__}: {err}") from None
    # astropy names an HDUList's file by its file object's name (HDUList.filename()), and
    # fsspec's files have none
    file.name = name
    return file


def _cause(err: OSError, path: str, default: str) -> str:
    """What an fsspec error says beyond the path it names (which may be all it says)."""
    said = err.strerror or str(err)
    return default if not said or said.strip("'\"") == path else said


__all__ = [
    "HEADER_BLOCK_SIZE",
    "ROWS_BLOCK_SIZE",
    "is_network_error",
    "open_fits",
    "open_remote",
]
