"""Tile images read from object storage: a real S3 server (moto, ``tests/s3.py``) reached
through real HTTP by s3fs, and fsspec's in-memory file system.

The reference is astropy reading the same local file, and Cutout2D on its pixels; the bytes
fetched are counted by the server.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from lensdask.cutouts.extract import extract_stamps_by_rows
from lensdask.cutouts.make import open_image, row_reader
from lensdask.formats.fits_images import HEADER_BLOCK_SIZE
from lensdask.images.headers import image_row, read_image_header
from lensdask.testing import cutout2d_stamps

KINDS = ("plain", "RICE_1", "GZIP_2")
"""A plain float32 image, and tile-compressed ones: RICE_1 (quantised) and GZIP_2."""


def write_image(path: Path, *, shape: tuple[int, int], kind: str = "plain") -> Path:
    """A float32 image of ``shape`` (ny, nx) with a TAN WCS and a few NaN pixels: plain in
    HDU 0, or tile-compressed (``kind``) in HDU 1."""
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    header = wcs.to_header()
    header["FILTER"] = "r"
    header["OBJECT"] = "KIDS_150.0_2.0"
    data = np.random.default_rng(ny * nx).normal(0.0, 5.0, shape).astype(np.float32)
    data[ny // 3, : nx // 4] = np.nan
    if kind == "plain":
        hdus = [fits.PrimaryHDU(data, header=header)]
    else:
        hdus = [fits.PrimaryHDU(), fits.CompImageHDU(data, header=header, compression_type=kind)]
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture
def upload(s3_bucket: str, s3_storage_options: dict):
    """``upload(local_file) -> s3://<fresh bucket>/<name>``, through s3fs."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_storage_options)

    def put(path: Path) -> str:
        fs.put_file(str(path), f"{s3_bucket}/{path.name}")
        return f"s3://{s3_bucket}/{path.name}"

    return put


def astropy_pixels(path: Path) -> np.ndarray:
    """The image as astropy reads the local file (the first HDU with data)."""
    with fits.open(path) as hdul:
        return next(hdu.data for hdu in hdul if hdu.data is not None).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_pixels_read_from_s3_equal_astropys_reading_of_the_local_file(
    tmp_path: Path, upload, s3_storage_options: dict, kind: str
) -> None:
    local = write_image(tmp_path / f"tile_{kind}.fits", shape=(300, 260), kind=kind)
    url = upload(local)
    expected = astropy_pixels(local)
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(0, 259, 25), [0.0, 259.0, 130.2]])
    y = np.concatenate([rng.uniform(0, 299, 25), [299.0, 0.0, 100.0]])
    hdul, image, wcs, hdu = open_image(url, hdu=None, band="r", storage_options=s3_storage_options)
    with hdul:
        assert hdul.filename() == url
        assert hdu == (0 if kind == "plain" else 1)
        assert image.shape == expected.shape
        assert wcs.to_header() == WCS(fits.getheader(local, hdu)).celestial.to_header()
        read_rows = row_reader(hdul, hdu, band="r")
        # forward blocks overlapping as extract_stamps_by_rows reads them, then a jump back
        for start, stop in ((0, 120), (100, 230), (200, 300), (10, 20)):
            np.testing.assert_array_equal(read_rows(start, stop), expected[start:stop])
        stamps = extract_stamps_by_rows(
            row_reader(hdul, hdu), image.shape, x, y, size=41, block_rows=64
        )
    reference = cutout2d_stamps(expected, list(zip(x, y, strict=True)), size=41)
    np.testing.assert_array_equal(stamps.data, reference)


def test_memory_url_reads_pixels_and_headers_as_the_local_file(tmp_path: Path) -> None:
    import fsspec

    local = write_image(tmp_path / "tile.fits.fz", shape=(120, 90), kind="RICE_1")
    fs = fsspec.filesystem("memory")
    url = "memory://lensdask-test/tile.fits.fz"
    fs.pipe_file("/lensdask-test/tile.fits.fz", local.read_bytes())
    try:
        hdul, _, _, hdu = open_image(url, hdu=None)
        with hdul:
            rows = row_reader(hdul, hdu)(0, 120)
        header = read_image_header(url)
    finally:
        fs.rm("/lensdask-test", recursive=True)
    np.testing.assert_array_equal(rows, astropy_pixels(local))
    assert (header.hdu, header.compression, header.shape) == (1, "RICE_1", (90, 120))


def test_ten_stamps_on_a_tall_image_fetch_only_the_rows_they_touch(
    tmp_path: Path, upload, s3_server, s3_storage_options: dict
) -> None:
    ny, nx, block_size = 16000, 200, 2**15
    local = write_image(tmp_path / "tall.fits", shape=(ny, nx))
    url = upload(local)
    size = local.stat().st_size
    x = np.linspace(60.0, nx - 60.0, 10)
    y = np.linspace(100.0, ny - 100.0, 10)  # 1700 rows apart: one read per stamp
    s3_server.traffic.reset()
    hdul, image, _, hdu = open_image(
        url, hdu=0, storage_options=s3_storage_options, block_size=block_size
    )
    with hdul:
        header = hdul.fileinfo(0)["datLoc"]
        stamps = extract_stamps_by_rows(row_reader(hdul, hdu), image.shape, x, y)
    fetched = s3_server.traffic.bytes_read
    touched = 10 * 101 * nx * 4
    # the header and each stamp's rows, each fetched with at most one block read ahead
    assert touched <= fetched <= header + touched + 11 * block_size
    assert fetched < size / 10
    reference = cutout2d_stamps(astropy_pixels(local), list(zip(x, y, strict=True)))
    np.testing.assert_array_equal(stamps.data, reference)


@pytest.mark.parametrize("kind", ["plain", "RICE_1"])
def test_dense_stamps_fetch_the_image_once(
    tmp_path: Path, upload, s3_server, s3_storage_options: dict, kind: str
) -> None:
    """Stamps everywhere, read in blocks of 64 rows that overlap by 40: each byte of the
    image is fetched once (plus one block read ahead at the end)."""
    local = write_image(tmp_path / f"dense_{kind}.fits", shape=(1000, 300), kind=kind)
    url = upload(local)
    block_size = 2**15
    y, x = np.mgrid[20:980:7, 20:280:60].reshape(2, -1).astype(float)
    s3_server.traffic.reset()
    hdul, image, _, hdu = open_image(
        url, hdu=None, storage_options=s3_storage_options, block_size=block_size
    )
    with hdul:
        stamps = extract_stamps_by_rows(
            row_reader(hdul, hdu), image.shape, x, y, size=41, block_rows=64
        )
    assert s3_server.traffic.bytes_read <= local.stat().st_size + block_size
    reference = cutout2d_stamps(astropy_pixels(local), list(zip(x, y, strict=True)), size=41)
    np.testing.assert_array_equal(stamps.data, reference)


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("problem", ["missing key", "missing bucket", "unreachable endpoint"])
def test_an_image_that_cannot_be_had_gives_one_error_naming_the_url(
    tmp_path: Path, upload, s3_bucket: str, s3_storage_options: dict, problem: str
) -> None:
    upload(write_image(tmp_path / "there.fits", shape=(50, 40)))
    options = s3_storage_options
    url = f"s3://{s3_bucket}/there.fits"
    if problem == "missing key":
        url, error = f"s3://{s3_bucket}/missing.fits", FileNotFoundError
    elif problem == "missing bucket":
        url, error = "s3://lensdask-no-such-bucket/there.fits", FileNotFoundError
    else:
        endpoint = f"http://127.0.0.1:{closed_port()}"
        options = {
            **options,
            "client_kwargs": {**options["client_kwargs"], "endpoint_url": endpoint},
            "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
        }
        error = ConnectionError
    place = re.escape(f"{url} (band r, HDU auto)")
    with pytest.raises(error, match=place) as raised:
        open_image(url, hdu=None, band="r", storage_options=options)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with pytest.raises(error, match=re.escape(url)):
        read_image_header(url, storage_options=options)


@pytest.mark.parametrize("kind", ["plain", "RICE_1"])
def test_header_scan_of_an_s3_image_gives_the_local_row_reading_only_headers(
    tmp_path: Path, upload, s3_server, s3_storage_options: dict, kind: str
) -> None:
    local = write_image(tmp_path / f"scan_{kind}.fits", shape=(1500, 1000), kind=kind)
    url = upload(local)
    s3_server.traffic.reset()
    remote = read_image_header(url, storage_options=s3_storage_options)
    with fits.open(local) as hdul:
        headers = hdul.fileinfo(remote.hdu)["datLoc"]  # bytes up to the image's first pixel
    # the headers, read ahead by one block: a few percent of the file
    assert s3_server.traffic.bytes_read <= headers + HEADER_BLOCK_SIZE < local.stat().st_size / 4
    row = image_row(remote, path=url, band=None, tile=None)
    expected = image_row(read_image_header(local), path=str(local), band=None, tile=None)
    assert row.pop("path") == url
    expected.pop("path")
    assert row == expected
    assert (row["compression"], row["tile"], row["band"]) == (
        "none" if kind == "plain" else "RICE_1",
        "KIDS_150.0_2.0",
        "r",
    )


def test_credentials_and_endpoint_from_the_environment(tmp_path: Path, upload, s3_env) -> None:
    """Without ``storage_options``, s3fs finds them where botocore looks: ``AWS_*``."""
    local = write_image(tmp_path / "env.fits", shape=(60, 50))
    url = upload(local)
    hdul, _, _, hdu = open_image(url, hdu=None)
    with hdul:
        rows = row_reader(hdul, hdu)(0, 60)
    np.testing.assert_array_equal(rows, astropy_pixels(local))
    assert read_image_header(url).shape == (50, 60)


@pytest.mark.slow
def test_dask_workers_read_with_the_storage_options_they_are_given(
    tmp_path: Path, upload, s3_storage_options: dict, client
) -> None:
    """Workers are other processes and see no credentials of the test's: the options travel
    with the task."""
    local = write_image(tmp_path / "worker.fits.fz", shape=(200, 150), kind="GZIP_2")
    url = upload(local)

    def stamps_on_a_worker(url: str, *, storage_options: dict) -> np.ndarray:
        hdul, image, _, hdu = open_image(url, hdu=None, storage_options=storage_options)
        with hdul:
            x, y = np.array([10.0, 75.0, 140.0]), np.array([190.0, 100.0, 5.0])
            return extract_stamps_by_rows(row_reader(hdul, hdu), image.shape, x, y).data

    future = client.submit(stamps_on_a_worker, url, storage_options=s3_storage_options)
    stamps = future.result(timeout=60)
    reference = cutout2d_stamps(astropy_pixels(local), [(10.0, 190.0), (75.0, 100.0), (140.0, 5.0)])
    np.testing.assert_array_equal(stamps, reference)
