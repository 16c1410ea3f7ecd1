"""Benchmark: chunking, compression and sharding of the cutout arrays, by measurement.

Takes ``--n`` real mock cutouts (101 x 101 float32, sky noise and galaxies) from a cutout
store made by ``bench_cutouts.py`` (made here if missing), and writes them as one tile's
array under each setting: cutouts per chunk (1, 16, 64, 256), Zstandard level (0, 1, 3,
9), one shard per tile as ``lensdask.formats.cutout_store.write_tile_group`` does, or no sharding
(one file per chunk, ``zarr`` ``create_array`` directly); plus Blosc-Zstandard with byte or
bit shuffle (which Zarr v3 ships) for comparison. For each it prints the bytes per cutout
on disk, the number of files, the write speed, the speed of reading the whole array and
of reading ``--random`` single cutouts at random indices, each with the files in the page
cache (warm) and after evicting them (cold: fsync + ``POSIX_FADV_DONTNEED`` on this
store's files only, so other processes' cache is untouched). Every read is checked
against the input, NaN for NaN.

Then (``--writers``) the writers of one tile's cutout array in the default layout (chunks
of 256 cutouts, CRC-32C, one shard per tile or a file per chunk), alternately: zarr-python
with its options (``write_empty_chunks``, ``async.concurrency``, chunk by chunk,
``create_array(data=...)``, the zarrs Rust codec pipeline where ``zarrs`` is installed),
tensorstore's ``zarr3`` driver where ``tensorstore`` is installed, and lensdask's
:func:`lensdask.formats.zarrs.write_array`; then a whole tile group (the cutouts and the
11 per-cutout arrays) by ``write_tile_group`` and by zarr-python alone. Each store is read
back with zarr-python and compared with the input.

    .venv/bin/python tests/benchmarks/bench_zarr_layout.py --workdir /tmp/lensdask-bench
    .venv/bin/python tests/benchmarks/bench_zarr_layout.py --writers-only --n 1327 --repeat 9
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cutouts import ensure_survey, run_cli

MiB = 2**20


@dataclass(frozen=True)
class Setting:
    chunk: int
    codec: str
    """``zstd-<level>``, ``none``, or ``blosc-zstd-<level>-<shuffle|bitshuffle>``."""
    sharded: bool

    @property
    def label(self) -> str:
        return f"{'shard/tile' if self.sharded else 'unsharded':<11}{self.chunk:>6}  {self.codec}"


def load_cutouts(store: Path, n: int) -> np.ndarray:
    """The first ``n`` cutouts of a store's r band, tiles in sorted order."""
    from lensdask.formats.cutout_store import complete_tiles, read_tile

    parts, total = [], 0
    for tile in complete_tiles(store):
        images = read_tile(store, tile, bands=("r",)).images["r"]
        parts.append(images[: n - total])
        total += parts[-1].shape[0]
        if total >= n:
            break
    return np.concatenate(parts)


def source_store(args: argparse.Namespace) -> Path:
    """A cutout store of real mock cutouts: ``--source``, or made like bench_cutouts.py."""
    if args.source:
        return args.source
    for folder in sorted(args.workdir.glob("cutouts-survey-*x0.6deg")):
        if (folder / "cutouts.zarr" / "_units").is_dir():
            return folder / "cutouts.zarr"
    folder = args.workdir / "cutouts-survey-4x0.6deg"
    print("making a cutout store (4 tiles of 0.6 deg) ...")
    targets, images = ensure_survey(folder, tiles=4, tile_size=0.6)
    run_cli(targets, images, folder / "cutouts.zarr", workers=2)
    return folder / "cutouts.zarr"


def compressors(codec: str):
    from zarr.codecs import BloscCodec, ZstdCodec

    if codec == "none":
        return None
    parts = codec.split("-")
    if parts[0] == "zstd":
        return (ZstdCodec(level=int(parts[1])),)
    return (BloscCodec(cname="zstd", clevel=int(parts[2]), shuffle=parts[3], typesize=4),)


def write(folder: Path, data: np.ndarray, setting: Setting) -> None:
    """Write ``data`` as the ``r`` array of a tile group in ``folder``."""
    import zarr

    from lensdask.formats.cutout_store import write_tile_group

    if setting.sharded and setting.codec.startswith(("zstd", "none")):
        level = 0 if setting.codec == "none" else int(setting.codec.split("-")[1])
        write_tile_group(
            folder, {"r": data}, {}, attrs={}, chunk=setting.chunk, compression_level=level
        )
        return
    n = data.shape[0]
    chunks = (min(setting.chunk, n), *data.shape[1:])
    shards = (-(-n // chunks[0]) * chunks[0], *data.shape[1:]) if setting.sharded else None
    group = zarr.open_group(str(folder), mode="w-")
    array = group.create_array(
        "r",
        shape=data.shape,
        dtype="float32",
        chunks=chunks,
        shards=shards,
        compressors=compressors(setting.codec),
        fill_value=np.nan,
        dimension_names=("cutout", "y", "x"),
    )
    array[:] = data


def evict(folder: Path) -> None:
    """Drop this folder's files from the page cache (fsync first so the pages are clean)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def read_all(folder: Path, data: np.ndarray) -> float:
    import zarr

    start = time.perf_counter()
    got = zarr.open_array(str(folder / "r"), mode="r")[:]
    seconds = time.perf_counter() - start
    if not np.array_equal(got, data, equal_nan=True):
        raise AssertionError(f"{folder}: read back differs")
    return seconds


def read_random(folder: Path, data: np.ndarray, indices: np.ndarray) -> float:
    import zarr

    array = zarr.open_array(str(folder / "r"), mode="r")
    start = time.perf_counter()
    for i in indices:
        got = array[int(i)]
    seconds = time.perf_counter() - start
    if not np.array_equal(got, data[int(indices[-1])], equal_nan=True):
        raise AssertionError(f"{folder}: random read differs")
    return seconds


# ----------------------------------------------------------------------------- writers

CHUNK = 256
"""Cutouts per chunk of the default layout (``cutouts.chunk``)."""


def create(folder: Path, data: np.ndarray, *, sharded: bool, **options):
    """The ``r`` array of a new group in ``folder``, in the default layout."""
    import zarr

    from lensdask.formats.zarrs import compressors

    n = data.shape[0]
    shards = (-(-n // CHUNK) * CHUNK, *data.shape[1:]) if sharded else None
    return zarr.open_group(str(folder), mode="w-").create_array(
        "r",
        shape=data.shape,
        dtype="float32",
        chunks=(CHUNK, *data.shape[1:]),
        shards=shards,
        compressors=compressors(0),
        fill_value=np.nan,
        dimension_names=("cutout", "y", "x"),
        **options,
    )


def zarr_writer(*, sharded: bool, by_chunk: bool = False, **options):
    def write(folder: Path, data: np.ndarray) -> None:
        array = create(folder, data, sharded=sharded, **options)
        if by_chunk:
            for start in range(0, data.shape[0], CHUNK):
                array[start : start + CHUNK] = data[start : start + CHUNK]
        else:
            array[...] = data

    return write


def zarr_config_writer(config: dict, *, sharded: bool):
    import zarr

    inner = zarr_writer(sharded=sharded)

    def write(folder: Path, data: np.ndarray) -> None:
        with zarr.config.set(config):
            inner(folder, data)

    return write


def create_array_with_data(*, sharded: bool):
    def write(folder: Path, data: np.ndarray) -> None:
        import zarr

        from lensdask.formats.zarrs import compressors

        n = data.shape[0]
        zarr.create_array(
            str(folder / "r"),
            data=data,
            chunks=(CHUNK, *data.shape[1:]),
            shards=(-(-n // CHUNK) * CHUNK, *data.shape[1:]) if sharded else None,
            compressors=compressors(0),
            fill_value=np.nan,
            dimension_names=("cutout", "y", "x"),
        )

    return write


def lensdask_writer(*, sharded: bool):
    def write(folder: Path, data: np.ndarray) -> None:
        from lensdask.formats.zarrs import write_array

        write_array(create(folder, data, sharded=sharded), data)

    return write


def tensorstore_writer(*, sharded: bool):
    """tensorstore's zarr3 driver, the same metadata (bytes + crc32c codecs)."""
    import tensorstore as ts

    plain = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]

    def write(folder: Path, data: np.ndarray) -> None:
        n = data.shape[0]
        chunk = [CHUNK, *data.shape[1:]]
        codecs = plain
        grid = chunk
        if sharded:
            grid = [-(-n // CHUNK) * CHUNK, *data.shape[1:]]
            codecs = [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": chunk,
                        "codecs": plain,
                        "index_codecs": plain,
                        "index_location": "end",
                    },
                }
            ]
        folder.mkdir()
        spec = {
            "driver": "zarr3",
            "kvstore": {"driver": "file", "path": str(folder / "r")},
            "metadata": {
                "shape": list(data.shape),
                "data_type": "float32",
                "fill_value": "NaN",
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
                "codecs": codecs,
                "dimension_names": ["cutout", "y", "x"],
            },
            "create": True,
        }
        ts.open(spec).result()[...].write(data).result()

    return write


def writers() -> dict[str, object]:
    """Writers of one tile's cutout array, by name (those whose library is installed)."""
    import importlib.util

    found = {}
    for sharded in (True, False):
        layout = "shard/tile" if sharded else "unsharded"
        found[f"{layout}: zarr-python array[...] = data"] = zarr_writer(sharded=sharded)
        found[f"{layout}: zarr-python write_empty_chunks"] = zarr_writer(
            sharded=sharded, config={"write_empty_chunks": True}
        )
        for concurrency in (1, 64):
            found[f"{layout}: zarr-python async.concurrency {concurrency}"] = zarr_config_writer(
                {"async.concurrency": concurrency}, sharded=sharded
            )
        found[f"{layout}: zarr-python chunk by chunk"] = zarr_writer(sharded=sharded, by_chunk=True)
        found[f"{layout}: zarr-python create_array(data=)"] = create_array_with_data(
            sharded=sharded
        )
        if importlib.util.find_spec("zarrs"):
            found[f"{layout}: zarrs codec pipeline"] = zarr_config_writer(
                {"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}, sharded=sharded
            )
        if importlib.util.find_spec("tensorstore"):
            found[f"{layout}: tensorstore zarr3"] = tensorstore_writer(sharded=sharded)
        found[f"{layout}: lensdask write_array"] = lensdask_writer(sharded=sharded)
    return found


def tile_columns(n: int) -> dict[str, np.ndarray]:
    """The per-cutout arrays of a one-band tile group, as ``lensdask cutouts`` writes them."""
    rng = np.random.default_rng(0)
    fractions = ("nonfinite_fraction", "zero_weight_fraction", "flagged_fraction", "bad_fraction")
    return {
        "ID": np.array([f"KiDS J{i:06d}.000+000000.00" for i in range(n)]),
        "sample": np.where(np.arange(n) % 30 == 0, "LRG", "BG"),
        **{name: rng.random(n) for name in ("RAJ2000", "DECJ2000", "x", "y")},
        "edge": rng.random(n) < 0.05,
        **{name: rng.random((n, 1)).astype(np.float32) for name in fractions},
    }


def zarr_tile_group(folder: Path, data: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    """The peer of ``write_tile_group``: the same group, every array written by zarr-python."""
    import zarr

    from lensdask.formats.zarrs import compressors

    create(folder, data, sharded=True)[...] = data
    group = zarr.open_group(str(folder), mode="a")
    for name, values in columns.items():
        dtype = str if values.dtype.kind in "OUT" else values.dtype
        group.create_array(
            name,
            shape=values.shape,
            dtype=dtype,
            chunks=values.shape,
            compressors=compressors(),
        )[...] = values


def compare_writers(data: np.ndarray, base: Path, repeat: int) -> None:
    """Writers of one tile's cutouts, alternately, median of ``repeat``."""
    import zarr

    from lensdask.formats.cutout_store import write_tile_group

    n = data.shape[0]
    columns = tile_columns(n)
    found = writers()
    found["tile group: zarr-python for every array"] = lambda folder, data: zarr_tile_group(
        folder, data, columns
    )
    found["tile group: lensdask write_tile_group"] = lambda folder, data: write_tile_group(
        folder, {"r": data}, columns, attrs={}, chunk=CHUNK, compression_level=0
    )
    seconds: dict[str, list[float]] = {name: [] for name in found}
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    for r in range(repeat):
        for k, (name, write) in enumerate(found.items()):
            folder = base / f"w{k}"
            start = time.perf_counter()
            write(folder, data)
            seconds[name].append(time.perf_counter() - start)
            if r == 0:
                got = zarr.open_array(str(folder / "r"), mode="r")[:]
                if not np.array_equal(got, data, equal_nan=True):
                    raise AssertionError(f"{name}: zarr-python reads back other values")
            shutil.rmtree(folder)
    print(
        f"\nwriters of one tile's {n} cutouts (chunks of {CHUNK}, CRC-32C, no compression), "
        f"median of {repeat}, read back by zarr-python and equal:"
    )
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"  {name:<56}{median * 1000:>8.1f} ms{n / median:>10,.0f} cutouts/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lensdask-bench"))
    parser.add_argument("--source", type=Path, help="cutout store (default: bench_cutouts')")
    parser.add_argument("--n", type=int, default=4096, help="cutouts (KiDS: ~3800 a tile)")
    parser.add_argument("--random", type=int, default=200, help="single-cutout reads")
    parser.add_argument("--repeat", type=int, default=1, help="writes and reads per setting")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1, 3, 9])
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache reads")
    parser.add_argument("--writers-only", action="store_true", help="only the writers")
    args = parser.parse_args()
    store = source_store(args)
    data = load_cutouts(store, args.n)
    n = data.shape[0]
    raw = data[0].nbytes
    print(f"{n} cutouts from {store} ({n * raw / MiB:.0f} MiB raw, {raw} bytes each); ")
    print(f"NaN pixels: {np.isnan(data).mean():.2%}; {args.random} random single reads")
    if args.writers_only:
        compare_writers(data, args.workdir / "zarr-writers", args.repeat)
        return

    settings = [
        Setting(chunk, "none" if level == 0 else f"zstd-{level}", sharded)
        for sharded in (True, False)
        for chunk in args.chunks
        for level in args.levels
    ]
    settings += [
        Setting(64, codec, True)
        for codec in ("blosc-zstd-1-shuffle", "blosc-zstd-3-shuffle", "blosc-zstd-1-bitshuffle")
    ]
    indices = np.random.default_rng(0).integers(0, n, size=args.random)
    base = args.workdir / "zarr-layout"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    cold = not args.no_cold
    header = (
        f"{'layout':<11}{'chunk':>6}  {'codec':<24}{'B/cutout':>9}{'ratio':>7}{'files':>7}"
        f"{'write/s':>9}{'read/s':>9}{'random/s':>9}"
    )
    if cold:
        header += f"{'cold read/s':>12}{'cold rnd/s':>11}"
    print(f"\nper setting, cutouts per second (median of {args.repeat}):\n{header}")
    for k, setting in enumerate(settings):
        writes, reads, randoms, cold_reads, cold_randoms = [], [], [], [], []
        for r in range(args.repeat):
            folder = base / f"s{k}-{r}"
            start = time.perf_counter()
            write(folder, data, setting)
            writes.append(time.perf_counter() - start)
            reads.append(read_all(folder, data))
            randoms.append(read_random(folder, data, indices))
            if cold:
                evict(folder)
                cold_reads.append(read_all(folder, data))
                evict(folder)
                cold_randoms.append(read_random(folder, data, indices))
        files = [p for p in (folder / "r").rglob("*") if p.is_file()]
        chunk_files = [p for p in files if p.name != "zarr.json"]
        size = sum(p.stat().st_size for p in files)
        line = (
            f"{setting.label:<43}{size / n:>9,.0f}{n * raw / size:>7.3f}{len(chunk_files):>7}"
            f"{n / statistics.median(writes):>9,.0f}{n / statistics.median(reads):>9,.0f}"
            f"{args.random / statistics.median(randoms):>9,.0f}"
        )
        if cold:
            line += (
                f"{n / statistics.median(cold_reads):>12,.0f}"
                f"{args.random / statistics.median(cold_randoms):>11,.0f}"
            )
        print(line, flush=True)
        for r in range(args.repeat):
            shutil.rmtree(base / f"s{k}-{r}")
    print(
        "\nB/cutout: bytes on disk of the cutout array (chunks or shard + zarr.json) per "
        "cutout; ratio: raw / on disk; files: chunk or shard files; write/s: cutouts written "
        "per second (to the page cache, as lensdask writes); read/s: whole array; random/s: "
        "one cutout per read at random indices, array opened once."
    )
    compare_writers(data, args.workdir / "zarr-writers", args.repeat)


if __name__ == "__main__":
    main()
