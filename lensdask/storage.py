"""Where lensdask's data lives: a local path or any fsspec URL (``s3://``, ``gs://``,
``abfs://``, ``memory://``), behind one path type and one commit protocol.

Locations are :class:`pathlib.Path` for local files and :class:`upath.UPath`
(universal-pathlib, the pathlib API over fsspec) for URLs, so that stage code joins, lists,
reads and stats both alike. A URL's credentials and endpoint come from where fsspec looks
(the environment, e.g. ``AWS_ACCESS_KEY_ID`` and ``AWS_ENDPOINT_URL``, fsspec's
configuration files) or from ``storage_options``, which travel with the path to the Dask
workers when it is pickled.

What differs between the two is the commit (docs/architecture.md, Reliability rules):
on a local file system a unit writes into a staging folder beside its output and moves it
into place with :func:`os.replace`; an object store has no rename, so a unit writes into a
local staging folder and uploads it under its final, deterministic names (each object's
put is atomic), after removing what a crashed attempt may have left there. On both the
unit's completion marker, written last, is the commit point: readers and resumes trust only
markers, and a rerun overwrites a unit without a marker, never adds to it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOCAL_PROTOCOLS = ("", "file", "local")


class StorageError(OSError):
    """A storage location cannot be reached or used; the message names the URL."""


def is_url(location: Any) -> bool:
    """Whether ``location`` is on a file system other than the local one (an fsspec URL
    such as ``s3://bucket/key``, or a :class:`upath.UPath` of one)."""
    protocol = getattr(location, "protocol", None)
    if protocol is not None and not isinstance(location, Path | str):
        return protocol not in LOCAL_PROTOCOLS
    text = os.fspath(location) if isinstance(location, os.PathLike) else str(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme not in LOCAL_PROTOCOLS and scheme.isidentifier()


def as_path(location: Any, *, storage_options: Mapping[str, Any] | None = None) -> Any:
    """``location`` as a path object: a :class:`pathlib.Path` for local files (``file://``
    URLs included), a :class:`upath.UPath` for any other fsspec URL (with
    ``storage_options``: credentials, endpoint). A path object is returned as it is."""
    if is_url(location):
        if not isinstance(location, str):
            return location
        from upath import UPath

        return UPath(location, **dict(storage_options or {}))
    if isinstance(location, Path):
        return location
    text = os.fspath(location) if isinstance(location, os.PathLike) else str(location)
    return Path(text.removeprefix("file://"))


def options_of(*paths: Any) -> dict[str, Any] | None:
    """The ``storage_options`` of the first URL among ``paths`` (a job gives every URL the
    same), for files named by URL inside its data (an image index's paths); None if none."""
    for path in paths:
        if path is not None and is_url(path) and hasattr(path, "storage_options"):
            return dict(path.storage_options)
    return None


def url_or_path(path: Any) -> str:
    """How messages and markers name a location: the URL of a remote one, the local path."""
    if is_url(path):
        return f"{path.protocol}://{path.path.lstrip('/')}" if hasattr(path, "path") else str(path)
    return os.fspath(path)


def replace(source: Any, target: Any) -> None:
    """Put the file or folder ``source`` (local) at ``target`` in one step where the file
    system allows it, replacing what is there: :func:`os.replace` locally; on an object
    store, removal of ``target`` then upload of ``source`` (each object's put atomic), after
    which the local ``source`` is removed."""
    if not is_url(target):
        target = Path(target)
        if target.is_dir() and Path(source).is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return
    remove(target)
    source = Path(source)
    fs, dest = target.fs, target.path
    if source.is_dir():
        for file in sorted(p for p in source.rglob("*") if p.is_file()):
            fs.put_file(os.fspath(file), f"{dest}/{file.relative_to(source).as_posix()}")
        shutil.rmtree(source)
    else:
        fs.put_file(os.fspath(source), dest)
        source.unlink()


def remove(path: Any) -> None:
    """Remove the file or folder ``path`` (and all under it) if it exists."""
    if is_url(path):
        if path.fs.exists(path.path):
            path.fs.rm(path.path, recursive=True)
        path.fs.invalidate_cache()
        return
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def move(source: Any, target: Any) -> None:
    """Move the file ``source`` to ``target`` on the same file system (a marker taken back,
    a unit superseded): :func:`os.replace` locally, copy and delete on an object store."""
    if is_url(source):
        source.fs.mv(source.path, target.path)
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def file_state(path: Any) -> list[Any]:
    """What changes when a file is rewritten: resolved path, size and modification time
    (locally), or URL, size and the store's version tag (ETag, generation, mtime)."""
    if is_url(path):
        info = path.fs.info(path.path)
        tags = ("ETag", "etag", "generation", "mtime", "LastModified")
        tag = next((info[key] for key in tags if key in info), None)
        return [url_or_path(path), info.get("size"), str(tag)]
    stat = Path(path).stat()
    return [os.fspath(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def check_reachable(location: Any, *, what: str, must_exist: bool = True) -> None:
    """Fail early, naming the URL, when a remote location cannot be used: an unreachable
    endpoint, a missing bucket, missing credentials, or (``must_exist``) nothing there.

    Raises
    ------
    StorageError
        With the URL, what it is for (``what``) and the cause.
    """
    if not is_url(location):
        return
    bucket = location.path.lstrip("/").split("/", 1)[0]
    try:
        missing = location.path if must_exist else bucket
        if not location.fs.exists(missing):
            raise FileNotFoundError(f"no such object, folder or bucket {missing!r}")
    except (OSError, ValueError) as err:
        raise StorageError(f"{what} {url_or_path(location)}: cannot be reached: {err}") from None
    except Exception as err:  # botocore and aiohttp raise their own types for the network
        raise StorageError(
            f"{what} {url_or_path(location)}: cannot be reached: {type(err).__name__}: {err}"
        ) from None


__all__ = [
    "StorageError",
    "as_path",
    "check_reachable",
    "file_state",
    "is_url",
    "move",
    "options_of",
    "remove",
    "replace",
    "url_or_path",
]
