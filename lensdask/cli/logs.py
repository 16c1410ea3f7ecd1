"""Where the commands' log goes: INFO lines on the terminal, everything in a log file.

The terminal shows lensdask's INFO lines (WARNING with ``-q``, DEBUG with ``-v``) and one
``FAILED <stage> <unit>: <reason>`` line per failed unit; the log file of a command (next
to its output, see :func:`log_path`) has every DEBUG line, with the traceback of each
failure. Only the command line configures logging; the library only logs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_SUFFIX = "_lensdask.log"
RUN_LOG = "lensdask.log"
"""The log file of ``lensdask run``, in the job's workdir."""

logger = logging.getLogger(__name__)


def configure_logging(level: int) -> None:
    """Log lensdask's records at ``level`` and up to the terminal (stderr), and keep its
    DEBUG records for a log file (:func:`log_file`)."""
    terminal = logging.StreamHandler()
    terminal.setLevel(level)
    logging.basicConfig(format=FORMAT, handlers=[terminal])  # unless logging is set up
    logging.getLogger().setLevel(min(level, logging.INFO))
    logging.getLogger("lensdask").setLevel(logging.DEBUG)


def log_path(out: Path) -> Path:
    """The log file of a stage command writing ``out``: ``<out stem>_lensdask.log`` next to
    it."""
    from lensdask.storage import is_url

    name = f"{out.stem}{LOG_SUFFIX}"
    return Path(name) if is_url(out) else out.with_name(name)  # logs stay on local disk


@contextlib.contextmanager
def log_file(path: Path) -> Iterator[Path | None]:
    """Append every log record (lensdask's from DEBUG, the others' from INFO) to ``path``
    while inside; yields ``path``, or None (with a warning) where it cannot be opened."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as err:
        logger.warning("no log file: cannot write %s: %s", path, err)
        yield None
        return
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    logger.debug("lensdask %s", " ".join(sys.argv[1:]))
    try:
        yield path
    except Exception:
        logger.debug("the command failed", exc_info=True)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
