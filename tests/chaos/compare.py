"""Compare the outputs of a job's workdir with a clean run's, row by row and byte by byte.

Every output is read into rows with a key and a digest of the row's bytes (its values with
their types, and its position in its unit), in two ways: through the stages' manifests
(:func:`lensdask.units.planned_units`, :func:`lensdask.formats.parquet.dataset_parts`),
as lensdask's readers take them (:func:`snapshot`), and as a user would read each output
folder without lensdask (:func:`naive_snapshot`: ``pandas.read_parquet`` of the folder, the
Zarr groups of the store, the PNG files of the stamps folder). :func:`compare` counts, per
output, the rows lost (in the clean run, not here), duplicated (a key twice) and stale
(not in the clean run, or with other bytes); :func:`assert_same` wants all of them 0.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.formats.parquet import dataset_parts, read_file
from lensdask.formats.scores import model_folders
from lensdask.units import planned_units

Rows = pd.DataFrame
"""The rows of one output: columns ``key`` and ``digest`` (str)."""

TARGETS = "targets.parquet"
CUTOUTS = "cutouts.zarr"
TRAINSET = "trainset.zarr"
SCORES = "scores.parquet"
CANDIDATES = "candidates.parquet"
STAMPS = "stamps"
SHEETS = "sheets"


@dataclass(frozen=True)
class Diff:
    """How one output of a workdir differs from the same output of a clean run."""

    output: str
    clean: int
    """Rows of the clean run."""
    rows: int
    """Rows here."""
    lost: int
    """Keys of the clean run missing here."""
    duplicated: int
    """Rows here whose key another row here has too."""
    stale: int
    """Rows here whose key the clean run has not, or whose bytes differ from its row's."""
    examples: tuple[str, ...] = ()
    """A few of the keys concerned."""

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.stale)

    def __str__(self) -> str:
        return (
            f"{self.output}: {self.rows} rows (clean {self.clean}): lost {self.lost}, "
            f"duplicated {self.duplicated}, stale {self.stale}; e.g. {list(self.examples)}"
        )


# --- rows and digests -------------------------------------------------------------------


def digest(*parts: Any) -> str:
    """SHA-256 of the bytes of ``parts`` (bytes as they are, anything else by repr: numpy
    scalars keep their type, floats their exact value)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()[:20]


def frame_rows(frame: pd.DataFrame, key: str | list[str], *, prefix: str = "") -> Rows:
    """Rows of a table keyed by ``key`` (column or columns); the digest covers every column
    (name, dtype and value) and the row's position; a ``.schema`` row covers the columns'
    order and types."""
    keys = [key] if isinstance(key, str) else key
    columns = list(frame.columns)
    schema = digest(*(f"{name}:{frame[name].dtype}" for name in columns))
    rows = [(f"{prefix}.schema", schema)]
    values = [frame[name].to_numpy() for name in columns]
    key_values = [frame[name].astype(str).to_numpy() for name in keys]
    for k in range(len(frame)):
        name = "/".join(str(v[k]) for v in key_values)
        rows.append((f"{prefix}{name}", digest(k, *(v[k] for v in values))))
    return pd.DataFrame(rows, columns=["key", "digest"])


def array_rows(array: np.ndarray) -> list[bytes]:
    """The bytes of each row (first axis) of an array, with its dtype."""
    values = np.asarray(array)
    kind = str(values.dtype).encode()
    if values.dtype.kind in "iufcb":
        flat = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)
        return [kind + row.tobytes() for row in flat]
    return [kind + repr(str(v)).encode() for v in values]


def group_rows(group: Any, rows: range, *, prefix: str, key: str | None) -> list[tuple[str, str]]:
    """Rows ``rows`` of every array under a Zarr group (recursively), one digest per row over
    all arrays (sorted by path); the key is the row's value of array ``key`` or its
    index. A ``.attrs`` row covers the attributes of the group and its subgroups, a
    ``.shapes`` row the arrays' names, shapes and chunks."""
    arrays = {}
    attrs = {"": dict(group.attrs)}
    for name, member in sorted(group.members(max_depth=None)):
        if hasattr(member, "shape"):
            arrays[name] = member
        else:
            attrs[name] = dict(member.attrs)
    out = [
        (f"{prefix}.attrs", digest(json.dumps(attrs, sort_keys=True, default=str))),
        (
            f"{prefix}.shapes",
            digest(*((name, a.shape, a.chunks, str(a.dtype)) for name, a in arrays.items())),
        ),
    ]
    if not len(rows):
        return out
    data = {name: array_rows(a[rows.start : rows.stop]) for name, a in arrays.items()}
    keys = data.get(key) if key else None
    ids = [str(v) for v in np.asarray(arrays[key][rows.start : rows.stop])] if keys else None
    for j, k in enumerate(rows):
        name = ids[j] if ids else str(k)
        out.append((f"{prefix}{name}", digest(k, *(data[n][j] for n in arrays))))
    return out


def to_rows(rows: list[tuple[str, str]]) -> Rows:
    return pd.DataFrame(rows, columns=["key", "digest"])


def file_digest(path: Path) -> str:
    return digest(path.read_bytes())


# --- reading a workdir ------------------------------------------------------------------


def snapshot(work: Path) -> dict[str, Rows]:
    """Every output of a workdir as lensdask reads it: through the manifests."""
    import zarr

    work = Path(work)
    out: dict[str, Rows] = {}
    if (work / TARGETS).exists():
        files = dataset_parts(work / TARGETS)
        out["targets"] = pd.concat(
            [
                frame_rows(read_file(path).to_pandas(), "ID", prefix=f"{path.stem}/")
                for path in files
            ],
            ignore_index=True,
        )
    if (work / CUTOUTS).exists():
        rows = [
            (
                ".root",
                digest(
                    json.dumps(
                        dict(zarr.open_group(str(work / CUTOUTS), mode="r").attrs), sort_keys=True
                    )
                ),
            )
        ]
        for tile in sorted(planned_units(work / CUTOUTS)):
            group = zarr.open_group(str(work / CUTOUTS / tile), mode="r")
            n = group["ID"].shape[0]
            rows += group_rows(group, range(n), prefix=f"{tile}/", key="ID")
        out["cutouts"] = to_rows(rows)
    if (work / TRAINSET).exists():
        root = zarr.open_group(str(work / TRAINSET), mode="r")
        rows = [(".root", digest(json.dumps(dict(root.attrs), sort_keys=True)))]
        by_split: dict[str, list[int]] = {}
        for unit in sorted(planned_units(work / TRAINSET)):
            split, _, batch = unit.rpartition("-")
            by_split.setdefault(split, []).append(int(batch))
        for split in sorted(by_split):
            group = root[split]
            chunk = group["images"].chunks[0]
            n = group["images"].shape[0]
            for batch in sorted(by_split[split]):
                part = range(batch * chunk, min((batch + 1) * chunk, n))
                found = group_rows(group, part, prefix=f"{split}/", key=None)
                rows += found if batch == min(by_split[split]) else found[2:]
        out["trainset"] = to_rows(rows)
    for model_id, folder in model_folders(work / SCORES).items():
        files = dataset_parts(folder, what="scores")
        out[f"scores/{model_id}"] = pd.concat(
            [
                frame_rows(read_file(path).to_pandas(), "ID", prefix=f"{path.stem}/")
                for path in files
            ],
            ignore_index=True,
        )
    if (work / CANDIDATES).exists():
        out["candidates"] = frame_rows(read_file(work / CANDIDATES).to_pandas(), "ID")
    if (work / STAMPS).exists():
        rows = []
        for tile, marker in sorted(planned_units(work / STAMPS).items()):
            for rel in sorted(marker.files):
                path = work / STAMPS / rel
                if rel.endswith(".png"):
                    rows.append((rel, file_digest(path)))
                else:
                    frame = read_file(path).to_pandas()
                    rows += frame_rows(frame, "candidate_id", prefix=f"{tile}/").itertuples(
                        index=False, name=None
                    )
        out["stamps"] = to_rows(rows)
        out["sheets"] = sheet_rows(work)
    return out


def sheet_rows(work: Path) -> Rows:
    return to_rows(
        [(path.name, file_digest(path)) for path in sorted((work / STAMPS / SHEETS).glob("*"))]
    )


def naive_snapshot(work: Path) -> dict[str, Rows]:
    """Every output of a workdir as a user would read it without lensdask: each Parquet
    folder with ``pandas.read_parquet``, each Zarr group the store lists, each PNG and
    index file of the stamps folder (names starting with ``_`` or ``.`` are not looked
    at, as pyarrow does not)."""
    import zarr

    work = Path(work)
    out: dict[str, Rows] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr names the markers folder it does not know
        if (work / TARGETS).exists():
            frame = pd.read_parquet(work / TARGETS)
            out["targets"] = positional(frame, "ID", "THELI_NAME")
        if (work / CUTOUTS).exists():
            root = zarr.open_group(str(work / CUTOUTS), mode="r")
            rows = [(".root", digest(json.dumps(dict(root.attrs), sort_keys=True)))]
            for tile, group in sorted(root.groups()):
                rows += group_rows(group, range(group["ID"].shape[0]), prefix=f"{tile}/", key="ID")
            out["cutouts"] = to_rows(rows)
        if (work / TRAINSET).exists():
            root = zarr.open_group(str(work / TRAINSET), mode="r")
            rows = [(".root", digest(json.dumps(dict(root.attrs), sort_keys=True)))]
            for split, group in sorted(root.groups()):
                n = group["images"].shape[0]
                rows += group_rows(group, range(n), prefix=f"{split}/", key=None)
            out["trainset"] = to_rows(rows)
        if (work / SCORES).is_dir():
            frame = pd.read_parquet(work / SCORES)
            for model_id, part in frame.groupby("model_id", sort=True, observed=True):
                part = part.reset_index(drop=True)
                out[f"scores/{model_id}"] = positional(part, "ID", "THELI_NAME")
        if (work / CANDIDATES).exists():
            out["candidates"] = frame_rows(pd.read_parquet(work / CANDIDATES), "ID")
        if (work / STAMPS).exists():
            rows = []
            for path in sorted((work / STAMPS).rglob("*.png")):
                rel = path.relative_to(work / STAMPS)
                if rel.parts[0] != SHEETS and not hidden(rel):
                    rows.append((str(rel), file_digest(path)))
            for path in sorted((work / STAMPS).glob("*/*.parquet")):
                if not hidden(path.relative_to(work / STAMPS)):
                    part = pd.read_parquet(path)
                    rows += frame_rows(
                        part, "candidate_id", prefix=f"{path.parent.name}/"
                    ).itertuples(index=False, name=None)
            out["stamps"] = to_rows(rows)
            out["sheets"] = sheet_rows(work)
    return out


def hidden(rel: Path) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.parts)


def positional(frame: pd.DataFrame, key: str, unit: str) -> Rows:
    """:func:`frame_rows` of a table read whole, each row at its position within its unit
    (column ``unit``), as the per-unit read gives it. Columns that pandas reads as
    categorical from a folder are compared by their values."""
    frame = frame.copy()
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype(frame[name].cat.categories.dtype)
    parts = [
        frame_rows(part.reset_index(drop=True), key, prefix=f"{name}/")
        for name, part in frame.groupby(unit, sort=True)
    ]
    return pd.concat(parts, ignore_index=True) if parts else to_rows([])


# --- comparing --------------------------------------------------------------------------


def diff_rows(name: str, clean: Rows, here: Rows) -> Diff:
    """Lost, duplicated and stale rows of ``here`` against ``clean`` (schema rows count as
    rows: another column type makes the output's schema row stale)."""
    expected = dict(zip(clean["key"], clean["digest"], strict=True))
    counts = here["key"].value_counts()
    duplicated = int((counts[counts > 1] - 1).sum())
    present = set(here["key"])
    lost = [key for key in expected if key not in present]
    stale = [
        key
        for key, value in zip(here["key"], here["digest"], strict=True)
        if expected.get(key) != value
    ]
    examples = tuple((lost + stale + list(counts[counts > 1].index))[:5])
    return Diff(name, len(clean), len(here), len(lost), duplicated, len(stale), examples)


def compare(clean: dict[str, Rows], here: dict[str, Rows]) -> list[Diff]:
    """A :class:`Diff` per output of either side (an output missing on one side is all lost,
    or all stale)."""
    empty = to_rows([])
    return [
        diff_rows(name, clean.get(name, empty), here.get(name, empty))
        for name in sorted(set(clean) | set(here))
    ]


def assert_same(clean: dict[str, Rows], work: Path, *, naive: bool = True) -> list[Diff]:
    """Assert that the outputs of ``work`` equal the clean ones, row by row and byte by byte
    (0 lost, 0 duplicated, 0 stale), read through the manifests and, with ``naive``, as
    files without lensdask too."""
    here = snapshot(work)
    diffs = [d for d in compare(clean, here) if not d.ok]
    assert not diffs, "outputs differ from a clean run's:\n" + "\n".join(map(str, diffs))
    if naive:
        plain = naive_snapshot(work)
        diffs = [d for d in compare(here, plain) if not d.ok]
        assert not diffs, (
            "a plain read of the output folders differs from the manifests' read:\n"
            + "\n".join(map(str, diffs))
        )
    return compare(clean, here)
