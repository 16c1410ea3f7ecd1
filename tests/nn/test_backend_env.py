"""The Keras backends' environment: set before they are imported, in workers too."""

from __future__ import annotations

import os

from lensdask.devices import (
    BACKEND_ENV,
    NO_GPU_ENV,
    below_tf_level,
    filtered_stderr,
    has_nvidia_device,
    set_backend_env,
)


def test_defaults_are_set_and_the_users_values_kept(monkeypatch):
    for name in BACKEND_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    set_backend_env()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    env = BACKEND_ENV if has_nvidia_device() else NO_GPU_ENV  # errors only without a GPU
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == env["TF_CPP_MIN_LOG_LEVEL"]
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


def test_tensorflow_start_up_lines_below_its_level_are_dropped(monkeypatch, capfd):
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796224016.203715    3594 port.cc:153] oneDNN custom operations are on.",
        "W0000 00:00:1796224016.2    3594 gpu.cc:12] a warning",
        "E0000 00:00:1796224974.894357    3029 cuda_platform.cc:52] failed call to cuInit",
        "F0000 00:00:1796224974.9    3029 check.cc:1] a fatal error",
        "a line of another library",
    ]
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    with filtered_stderr(below_tf_level):
        os.write(2, "".join(line + "\n" for line in lines).encode())
    assert capfd.readouterr().err.splitlines() == lines[3:]
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    assert [line for line in lines if not below_tf_level(line)] == lines[4:]
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert not any(below_tf_level(line) for line in lines)
