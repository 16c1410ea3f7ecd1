"""IDs that name one row each: the catalog's ``ID``, the review's ``candidate_id``.

Stages join tables by these IDs (the candidates with their targets, the scores with
injected and known lenses, the ranking with the candidates). A join on an ID that two rows
share would give one galaxy the position, magnitude or score of another, so every join
checks its right-hand side first (:func:`require_unique_ids`) and fails naming the repeated
IDs, instead of silently picking one row (docs/architecture.md, Contracts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SHOWN = 20
"""How many repeated IDs an error message names (then the count of the others)."""


class DuplicateIDError(ValueError):
    """IDs that must be unique occur more than once; the message names them and where."""


def repeated_ids(ids: Any) -> dict[str, list[int]]:
    """Each ID that occurs more than once in ``ids``, with its positions (0-based), sorted
    by ID.

    Parameters
    ----------
    ids : sequence or pandas.Series
        IDs in row order; missing values (None, NaN) are not IDs and never repeat.
    """
    import numpy as np
    import pandas as pd

    series = pd.Series(np.asarray(ids, dtype=object)).dropna()
    repeated = series[series.duplicated(keep=False)]
    positions = repeated.index.to_numpy()
    groups = pd.Series(positions).groupby(repeated.to_numpy(), sort=True)
    return {str(key): [int(k) for k in group] for key, group in groups}


def describe_repeats(
    repeats: Mapping[str, Sequence[Any]], *, where: str | None = "rows", shown: int = SHOWN
) -> str:
    """``'A' (rows 3, 7), 'B' (rows 2, 5) and 12 more``: the first ``shown`` repeated IDs
    with where each occurs (``where`` names what the positions are; None: the places say
    it themselves)."""
    items = list(repeats.items())
    head = f"{where} " if where else ""
    parts = [f"{key!r} ({head}{', '.join(map(str, places))})" for key, places in items[:shown]]
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(parts) + more


def require_unique_ids(frame: Any, *, column: str = "ID", what: str) -> None:
    """Raise :class:`DuplicateIDError` where two rows of ``frame`` share an ID.

    Parameters
    ----------
    frame : pandas.DataFrame
        A table about to be joined by ``column``.
    column : str
        Its ID column.
    what : str
        What the table is (a path, "the targets"), for the message.

    Raises
    ------
    DuplicateIDError
        Naming the first :data:`SHOWN` repeated IDs with their rows (0-based) and the count.
    """
    repeats = repeated_ids(frame[column])
    if repeats:
        rows = sum(len(places) for places in repeats.values())
        raise DuplicateIDError(
            f"{what}: {len(repeats)} {column}(s) occur more than once ({rows} rows), so a "
            f"join by {column} cannot tell which row is meant: {describe_repeats(repeats)}"
        )
