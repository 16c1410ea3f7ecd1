"""The GPU path of scoring: the model resident on GPU workers, mixed precision, GPU batches.

Run where a CUDA GPU is visible (skipped elsewhere), under the backend of ``KERAS_BACKEND``
(the GPU machine lent to developers has JAX and PyTorch, not TensorFlow).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lensdask.formats.cutout_store import read_tile

pytestmark = pytest.mark.gpu
keras = pytest.importorskip("keras")


def gpu_cluster():
    """dask-cuda's LocalCUDACluster where it is installed, else one LocalCluster worker
    declaring the GPU (both: one worker per GPU)."""
    try:
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster(host="127.0.0.1", dashboard_address=":0", resources={"GPU": 1})
    except ImportError:
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            host="127.0.0.1",
            dashboard_address=":0",
            resources={"GPU": 1},
        )


def test_scoring_on_a_gpu_worker_uses_mixed_precision_and_gpu_batches(store, model_dir, tmp_path):
    from distributed import Client

    from lensdask.formats.model_dir import load_model
    from lensdask.nn.evaluate import predict_images
    from lensdask.normalise import normalise_stamps
    from lensdask.score.resident import GPU_BATCH
    from lensdask.score.scoring import score_cutouts

    def resident_facts(model_id: str) -> tuple[str, int, bool, str]:
        from lensdask.score.resident import MODELS

        resident = MODELS[model_id]
        return (
            resident.device,
            resident.batch_size,
            resident.mixed_precision,
            resident.model.dtype_policy.name,
        )

    out = tmp_path / "scores.parquet"
    with gpu_cluster() as cluster, Client(cluster) as client:
        report = score_cutouts(store, model_dir, out, client=client, progress=False)
        facts = set(client.run(resident_facts, report.model_id).values())
    assert facts == {("gpu", GPU_BATCH, True, "mixed_float16")}
    assert report.units.ok and report.problems == []
    scores = pd.read_parquet(out)
    model, _ = load_model(model_dir)  # float32 here
    tile = read_tile(store, "KIDS_2.0_0.5", bands=("r",))
    expected = predict_images(model, normalise_stamps(tile.images["r"]), batch_size=64)
    got = scores.set_index("ID").loc[tile.ids.astype(object), "p_cnn"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=2e-2)
