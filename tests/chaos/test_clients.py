"""Two clients in one process: a stage run with an injected client must follow its tasks on
that client's event loop, whatever client is current (found by the chaos suite: its
commands hung in as_completed, or failed in tornado with ``assert 0 < size``)."""

from __future__ import annotations

import distributed

from lensdask.runner import run_units


def add_one(x: int) -> int:
    return x + 1


def test_run_units_follows_its_futures_on_the_injected_clients_loop(client, monkeypatch):
    loops = []
    real = distributed.as_completed

    def as_completed(*args, **kwargs):
        tracker = real(*args, **kwargs)
        loops.append(tracker.loop)
        return tracker

    monkeypatch.setattr(distributed, "as_completed", as_completed)
    other = distributed.Client(client.scheduler.address, set_as_default=False)
    try:
        report = run_units(
            other, add_one, ["a", "b"], stage="two-clients", progress=False, unit_args=[1, 2]
        )
    finally:
        other.close()
    assert report.results == {"a": 2, "b": 3}
    assert loops == [other.loop]
