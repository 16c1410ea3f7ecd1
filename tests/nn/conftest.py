"""Fixtures of the classifier tests: a tiny training set made the real way, and one model.

The training set comes from :func:`lensdask.testing.write_cutout_store` (synthetic galaxies)
through :func:`lensdask.lensing.simulate.simulate_lenses` on the session's LocalCluster:
101 training, 11 validation and 32 test examples in Zarr chunks of 16. The model is a very
narrow ResNet-18 (width 1/16) trained in this process for 3 epochs without augmentation;
tests that change a model directory work on copies.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lensdask.config import SimulateConfig, TrainConfig

CHUNK = 16
"""Examples per simulation batch, hence per Zarr chunk."""


@dataclass
class Trained:
    """A model directory trained by the ``trained`` fixture (do not modify: copy it)."""

    out: Path
    config: TrainConfig
    card: dict
    after_epoch_1: Path
    """A copy of ``out`` taken as epoch 1 was committed: what a kill then leaves behind."""
    records: list[logging.LogRecord] = field(default_factory=list)
    """Records of ``lensdask.nn.train`` logged while it trained."""


class _Recorder(logging.Handler):
    """Keeps the records of the training logger; copies the model directory when the line
    of epoch 1 is logged (after its checkpoint, state and history were written)."""

    def __init__(self, out: Path, snapshot: Path) -> None:
        super().__init__(logging.DEBUG)
        self.out, self.snapshot = out, snapshot
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if record.getMessage().startswith("train: epoch 1/"):
            shutil.copytree(self.out, self.snapshot)


@pytest.fixture(scope="session")
def trainset(tmp_path_factory, client) -> Path:
    """A real tiny ``trainset.zarr``: 56 lenses + 45 negatives to train on, 32 to test."""
    from lensdask.lensing.simulate import simulate_lenses
    from lensdask.testing import write_cutout_store

    root = tmp_path_factory.mktemp("nn-data")
    store = write_cutout_store(
        root / "cutouts.zarr",
        {"KIDS_1.0_0.5": {"LRG": 40, "BG": 10}, "KIDS_2.0_0.5": {"LRG": 20, "BG": 10}},
        seed=3,
    )
    config = SimulateConfig(
        positives=64,
        negatives=48,
        test_positives=16,
        test_negatives=16,
        negative_mix={"LRG": 0.5, "BG": 0.5},
        batch_size=CHUNK,
        seed=1,
    )
    out = root / "trainset.zarr"
    report = simulate_lenses(store, out, config=config, client=client, progress=False)
    assert report.units.ok, report.units.failures
    return out


@pytest.fixture(scope="session")
def tiny_config() -> TrainConfig:
    """The training configuration of the ``trained`` model (3 epochs, no augmentation,
    float32 even where a GPU is seen)."""
    return TrainConfig(
        width=0.0625, batch_size=CHUNK, epochs=3, augment=False, mixed_precision=False, seed=0
    )


@pytest.fixture(scope="session")
def trained(trainset, tiny_config, tmp_path_factory) -> Trained:
    """The tiny model, trained in this process (``client=None``), with a snapshot of its
    directory after the first epoch."""
    pytest.importorskip("keras")
    from lensdask.nn.train import train_model

    root = tmp_path_factory.mktemp("nn-model")
    out = root / "model"
    logger = logging.getLogger("lensdask.nn.train")
    handler, level = _Recorder(out, root / "after-epoch-1"), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        report = train_model(trainset, out, config=tiny_config, progress=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert handler.snapshot.is_dir()
    return Trained(
        out=out,
        config=tiny_config,
        card=report.card,
        after_epoch_1=handler.snapshot,
        records=handler.records,
    )


def copy_model_dir(source: Path, target: Path) -> Path:
    """``model.keras`` and ``card.json`` of ``source`` copied into a new ``target``."""
    target.mkdir(parents=True)
    for name in ("model.keras", "card.json"):
        shutil.copy2(source / name, target / name)
    return target


@pytest.fixture
def model_copy(trained, tmp_path) -> Path:
    """A copy of the trained model directory (model file and card only) to change."""
    return copy_model_dir(trained.out, tmp_path / "model")


@pytest.fixture
def kill_after_first_epoch(tmp_path):
    """Run ``lensdask ARGS`` (a training into ``out``) in a subprocess and SIGKILL it once
    its first epoch's checkpoint is written; returns the process's exit status."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from lensdask.nn.train import read_state

    def run(args: list[str], out: Path) -> int:
        command = [str(Path(sys.executable).with_name("lensdask")), *args]
        log = tmp_path / "stderr.txt"
        with open(log, "wb") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 300
            while (state := read_state(out)) is None or state["epoch"] < 0:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no epoch completed in 300 s"
                time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
        return process.returncode

    return run
