"""The Keras backends' environment: set before they are imported, in workers too."""

from __future__ import annotations

import os

from lensdask.devices import BACKEND_ENV, set_backend_env


def test_defaults_are_set_and_the_users_values_kept(monkeypatch):
    for name in BACKEND_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    set_backend_env()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == BACKEND_ENV["TF_CPP_MIN_LOG_LEVEL"]
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_workers_started_afterwards_inherit_it(monkeypatch):
    from distributed import Client, LocalCluster

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    set_backend_env()
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        seen = client.run(lambda: os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
    assert list(seen.values()) == ["1"]
