"""The GPU path of training: a worker with the ``GPU`` resource, mixed precision, any backend.

Run where a CUDA GPU is visible (skipped elsewhere), under the backend of ``KERAS_BACKEND``
(the GPU machine lent to developers has JAX and PyTorch, not TensorFlow).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from lensdask.config import TrainConfig

pytestmark = pytest.mark.gpu
keras = pytest.importorskip("keras")


def test_the_backend_sees_a_gpu():
    from lensdask.devices import has_gpu

    assert has_gpu(), f"Keras backend {keras.backend.backend()} sees no GPU"


def test_training_on_a_gpu_worker_uses_mixed_precision(trainset, tmp_path):
    from distributed import Client, LocalCluster, get_task_stream

    from lensdask.formats.model_dir import load_model
    from lensdask.nn.evaluate import predict_split
    from lensdask.nn.train import train_model

    config = TrainConfig(width=0.25, epochs=3, batch_size=16, augment=False, learning_rate=3e-3)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            resources={"GPU": 1},
        ) as cluster,
        Client(cluster) as client,
        get_task_stream(client=client) as stream,
    ):
        report = train_model(trainset, tmp_path / "model", config=config, client=client)
    assert [task["key"] for task in stream.data if task["key"].startswith("train-")]
    training = report.card["training"]
    assert training["gpu"] is True
    assert training["mixed_precision"] is True
    with open(tmp_path / "model" / "history.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses[-1] < losses[0]
    model, card = load_model(tmp_path / "model", input_shape=(101, 101, 1))
    assert card["libraries"]["keras_backend"] == keras.backend.backend()
    labels, scores = predict_split(model, trainset, "test")
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    assert labels.size == card["test_metrics"]["positives"] + card["test_metrics"]["negatives"]


def test_mixed_precision_predicts_like_float32():
    from lensdask.nn.model import build_resnet18

    images = np.random.default_rng(0).uniform(0, 255, (8, 101, 101, 1)).astype(np.float32)
    full = build_resnet18(width=0.25, seed=3)
    expected = np.asarray(full.predict_on_batch(images))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = build_resnet18(width=0.25, seed=3)
        half.set_weights(full.get_weights())
        got = np.asarray(half.predict_on_batch(images))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert got.dtype == np.float32  # the output layer computes in float32
    np.testing.assert_allclose(got, expected, atol=2e-2)


def test_cuda_cluster_declares_the_gpu_resource():
    pytest.importorskip("dask_cuda")
    from lensdask.cluster import ClusterSpec, connect

    with connect(ClusterSpec(kind="cuda", dashboard_address="127.0.0.1:0")) as client:
        workers = client.scheduler_info()["workers"].values()
        assert workers and all(w["resources"].get("GPU") == 1 for w in workers)
