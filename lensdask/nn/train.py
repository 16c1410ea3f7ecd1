"""The training job: ResNet-18 on ``trainset.zarr``, as one task on one Dask worker.

Layout of the model directory ``OUT``::

    OUT/model.keras, OUT/card.json      the final model (best validation loss) and its card
    OUT/roc.png, OUT/p_cnn_test.png     test-split ROC curve and p_CNN histograms
    OUT/history.csv                     loss, accuracy, AUC (train and validation) per epoch
    OUT/checkpoints/epoch-<e>.keras     model + optimizer state after epoch e: the last
                                        epoch's and the best epoch's (validation loss)
    OUT/checkpoints/state.json          epoch, the files of the last and best epochs, best
                                        loss, patience count, history: the commit point

The task asks for the Dask resource ``GPU`` when a worker has it (dask-cuda workers started
by ``lensdask --cluster cuda``). After an interruption, a rerun with the same configuration
resumes from the last epoch's checkpoint at the next epoch (a checkpoint written after the
state by a run killed in between is ignored and replaced); the shuffling and augmentation of
an epoch depend only on the seed and the epoch number, so a resumed run trains on the same
batches and ends with the same weights as an uninterrupted one.
A different configuration or training set starts afresh.

With ``train.members`` K > 1, ``OUT`` is a committee (:mod:`lensdask.nn.committee`): each
member ``OUT/members/<k>`` has the layout above and is trained by a task of its own.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensdask.config import TrainConfig
from lensdask.formats.files import atomic_path
from lensdask.formats.trainset import check_trainset
from lensdask.normalise import known_normalisations
from lensdask.stages import StageIO, StageOutcome
from lensdask.units import config_hash

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
HISTORY_FILE = "history.csv"


def training_hash(config: TrainConfig, trainset_attrs: dict[str, Any]) -> str:
    """What a checkpoint must agree with to be resumed: the configuration less the patience
    (which only says when to stop) and, on the ``plateau`` schedule, less the number of
    epochs (the ``cosine`` schedule decays over them), and the training set's plan and the
    cutouts it was made from. The committee's fields (``members``, ``member_widths``,
    ``combination``) are left out: one network is trained by its own seed and width."""
    settings = dataclasses.asdict(config)
    for name in ("members", "member_widths", "combination"):
        settings.pop(name)
    if config.schedule == "plateau":
        settings.pop("epochs")
    settings.pop("patience")
    return config_hash(
        {
            "train": settings,
            "plan": trainset_attrs["plan_hash"],
            "set": trainset_attrs["config"],
            "cutouts": trainset_attrs.get("cutouts_units"),
        }
    )


def read_state(out: Path) -> dict[str, Any] | None:
    """The checkpoint state of a model directory, or None."""
    path = out / CHECKPOINTS / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _checkpointer(out: Path, *, chash: str, config: TrainConfig, state: dict[str, Any] | None):
    """A Keras callback that commits each epoch: model files first, state last; it also
    stops training early and logs one line per epoch."""
    import keras

    from lensdask.formats.files import write_json_atomic
    from lensdask.formats.model_dir import save_model

    class Checkpointer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.state = state or {
                "config_hash": chash,
                "epoch": -1,
                "best_val_loss": None,
                "best_epoch": None,
                "wait": 0,
                "stopped": False,
                "history": [],
            }

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = {key: float(value) for key, value in (logs or {}).items()}
            folder = out / CHECKPOINTS
            s = self.state
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))
            loss = logs.get("val_loss", logs.get("loss"))
            improved = s["best_val_loss"] is None or loss < s["best_val_loss"]
            if improved:
                s.update(best_val_loss=loss, best_epoch=epoch, wait=0)
            else:
                s["wait"] += 1
                plateau = config.schedule == "plateau" and config.lr_patience
                if plateau and s["wait"] % config.lr_patience == 0:
                    # The rate lives in the optimizer's state, saved with the checkpoint.
                    rate.assign(rate * 0.5)
                    logger.info("train: learning rate halved to %.2e", float(rate.numpy()))
            name = f"epoch-{epoch:04d}.keras"
            save_model(self.model, folder / name)
            s["last"] = name
            if improved:
                s["best"] = name
            s["epoch"] = epoch
            s["history"].append({"epoch": epoch, **logs})
            s["stopped"] = s["wait"] >= config.patience
            write_json_atomic(folder / STATE_FILE, s)
            for stale in folder.glob("epoch-*.keras"):
                if stale.name not in (s["last"], s["best"]):
                    stale.unlink()
            _write_history(out / HISTORY_FILE, s["history"])
            logger.info(
                "train: epoch %d/%d %s",
                epoch + 1,
                config.epochs,
                " ".join(f"{key}={value:.4f}" for key, value in logs.items()),
            )
            if s["stopped"]:
                logger.info("train: early stop, best epoch %d", s["best_epoch"] + 1)
                self.model.stop_training = True

    return Checkpointer()


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> Any:
    """The optimizer's learning rate: a float (``plateau``) or a Keras schedule of the step
    (``cosine``: warm-up then cosine decay, see :class:`~lensdask.config.TrainConfig`).

    Parameters
    ----------
    config : TrainConfig
    steps_per_epoch : int
        Training steps (batches) in one epoch; >= 1.
    """
    import keras

    if config.schedule == "plateau":
        return config.learning_rate
    warmup = round(config.warmup * steps_per_epoch)
    total = config.epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate / 10 if warmup else config.learning_rate,
        decay_steps=max(total - warmup, 1),
        alpha=0.01,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    # Same columns in the same order whether the rows come from Keras or state.json.
    names = ["epoch", *sorted({key for row in history for key in row} - {"epoch"})]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(history)


def fit_model(
    trainset: str | Path,
    out: str | Path,
    *,
    config: TrainConfig,
    initial_model: str | Path | None = None,
    test_set: str | Path | None = None,
) -> dict[str, Any]:
    """Train (or resume training) and write the model directory. Runs where it is called:
    in-process or inside a Dask task.

    Parameters
    ----------
    trainset : path
        ``trainset.zarr`` with train, val and test splits.
    out : path
        The model directory (see the module docstring).
    config : TrainConfig
        Network width, optimisation, early stopping, augmentation, seed; one network
        (``members`` 1: a committee trains each member by this function).
    initial_model : path, optional
        A model directory whose weights the training starts from (a fine-tune), instead of
        weights drawn from the seed; its ``model_id`` is part of the training hash.
    test_set : path, optional
        The training set whose test split the best model is evaluated on (default:
        ``trainset``'s).

    Returns
    -------
    dict
        The model card (``model_id``, test metrics, ...).
    """
    from lensdask.devices import set_backend_env

    set_backend_env()  # in a fresh worker, before Keras' backend is imported
    import keras

    from lensdask.devices import enable_memory_growth, has_gpu
    from lensdask.formats.model_dir import library_versions, load_model, write_model_dir
    from lensdask.formats.trainset import read_attrs
    from lensdask.nn.data import Augmentation, trainset_sequence
    from lensdask.nn.evaluate import evaluate_test_split
    from lensdask.nn.model import architecture, build_resnet18, precision_policy

    if config.members != 1:
        raise ValueError(f"train.members: fit_model trains one network, got {config.members}")
    trainset, out = Path(trainset), Path(out)
    attrs = read_attrs(trainset)
    if attrs.get("normalisation") not in known_normalisations():
        raise ValueError(
            f"{trainset}: images normalised as {attrs.get('normalisation')!r}, this lensdask "
            f"expects one of {known_normalisations()}: rebuild the training set"
        )
    chash = training_hash(config, attrs)
    if initial_model is not None:
        from lensdask.formats.model_dir import read_card

        parent = read_card(initial_model)["model_id"]
        chash = config_hash({"training": chash, "initial_model": parent})
    state = read_state(out)
    if state is not None and state.get("config_hash") != chash:
        logger.warning("train: %s holds a run of another configuration: starting afresh", out)
        shutil.rmtree(out / CHECKPOINTS)
        state = None
    if state is not None and (state["stopped"] or state["epoch"] + 1 >= config.epochs):
        card = _complete_card(out, chash)
        if card is not None:
            logger.info("train: %s is complete (model %s)", out, card["model_id"])
            return card
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)

    enable_memory_growth()
    gpu = has_gpu()
    mixed = gpu if config.mixed_precision is None else config.mixed_precision
    size = int(attrs["size"])
    bands = list(attrs.get("bands") or [attrs.get("band")])  # one channel per band
    train = trainset_sequence(
        trainset,
        "train",
        batch_size=config.batch_size,
        seed=config.seed,
        augmentation=Augmentation(resample=config.arbitrary_rotation) if config.augment else None,
        initial_epoch=0 if state is None else state["epoch"] + 1,
    )
    # Every random draw of the training comes from its own seed, derived from config.seed:
    # the initial weights (per layer), each epoch's order and augmentation (per epoch and
    # chunk). So no global random state is seeded here: the worker's other tasks keep theirs.
    with precision_policy(mixed=mixed):
        if state is None:
            if initial_model is None:
                model = build_resnet18(
                    input_shape=(size, size, len(bands)), width=config.width, seed=config.seed
                )
            else:
                model, _ = load_model(initial_model, input_shape=(size, size, len(bands)))
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate(config, len(train))),
                loss="binary_crossentropy",
                metrics=["accuracy", keras.metrics.AUC(name="auc")],
            )
        else:
            model = keras.saving.load_model(out / CHECKPOINTS / state["last"], safe_mode=True)
            logger.info("train: resuming after epoch %d", state["epoch"] + 1)
        initial_epoch = 0 if state is None else state["epoch"] + 1
        callback = _checkpointer(out, chash=chash, config=config, state=state)
        if initial_epoch < config.epochs and not (state and state["stopped"]):
            model.fit(
                train,
                validation_data=trainset_sequence(
                    trainset, "val", batch_size=config.batch_size, shuffle=False
                ),
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                # The sequence shuffles itself, seeded by the epoch; Keras' own batch
                # shuffle would draw from the global `random` state.
                shuffle=False,
                callbacks=[callback],
                verbose=0,
            )
        best = keras.saving.load_model(out / CHECKPOINTS / callback.state["best"], safe_mode=True)
        tested = Path(test_set or trainset)
        metrics = evaluate_test_split(best, tested, out, title=f"test split of {tested.name}")
    final = callback.state
    card = {
        "architecture": architecture(best),
        "input_shape": [size, size, len(bands)],
        "normalisation": attrs["normalisation"],
        "band": attrs.get("band"),
        "bands": bands,
        "pixel_scale": attrs.get("pixel_scale"),
        "training": {
            **dataclasses.asdict(config),
            "member_widths": list(config.member_widths),  # as JSON reads it back
            "mixed_precision": bool(mixed),
            "gpu": gpu,
            "epochs_run": final["epoch"] + 1,
            "best_epoch": final["best_epoch"] + 1,
            "best_val_loss": final["best_val_loss"],
            "early_stopped": final["stopped"],
            "training_hash": chash,
        },
        "seed": config.seed,
        "data": {
            "trainset": str(trainset.resolve()),
            "plan_hash": attrs.get("plan_hash"),
            "config_hash": attrs.get("config"),
            "counts": attrs.get("counts"),
            "cutouts": attrs.get("cutouts"),
        },
        "test_metrics": metrics.as_dict(),
        "libraries": library_versions(),
    }
    card["model_id"] = write_model_dir(best, out, card=card)
    return card


def _complete_card(out: Path, chash: str) -> dict[str, Any] | None:
    """The card of a finished training of this configuration, if its model is intact."""
    from lensdask.formats.model_dir import ModelError, read_card

    try:
        card = read_card(out)
    except ModelError:
        return None
    return card if card.get("training", {}).get("training_hash") == chash else None


@dataclass(frozen=True)
class TrainReport:
    """Outcome of :func:`train_model`."""

    out: Path
    card: dict[str, Any]


def gpu_resources(client: Any) -> dict[str, int] | None:
    """The resources a training task asks for: a ``GPU`` where a worker of ``client``'s
    cluster has one."""
    workers = client.scheduler_info().get("workers", {}).values()
    if any(worker.get("resources", {}).get("GPU") for worker in workers):
        return {"GPU": 1}
    return None


def train_committee(
    trainset: Path,
    out: Path,
    *,
    config: TrainConfig,
    client: Any | None,
    progress: bool,
    initial_model: str | Path | None = None,
    test_set: str | Path | None = None,
) -> dict[str, Any]:
    """Train the ``config.members`` members (one Dask task each, or one after the other in
    this process without a ``client``), then evaluate the committee
    (:func:`finish_committee`).

    Parameters
    ----------
    trainset, out, config, client, progress
        As :func:`lensdask.nn.train.train_model`.
    initial_model : path, optional
        A committee of as many members: member ``k`` starts from its member ``k``'s weights.
    test_set : path, optional
        The training set whose test split evaluates the members and the committee.

    Returns
    -------
    dict
        The committee's card.

    Raises
    ------
    RuntimeError
        If members failed (each named with its error); the others are complete and a rerun
        trains only the failed ones.
    """
    from lensdask.formats.model_dir import member_dir
    from lensdask.nn.committee import finish_committee, member_config, parent_members

    members = [member_config(config, k) for k in range(config.members)]
    parents = parent_members(initial_model, config.members)
    outs = [member_dir(out, k) for k in range(config.members)]
    tested = str(test_set or trainset)
    if client is None:
        cards = [
            fit_model(trainset, where, config=member, initial_model=parent, test_set=tested)
            for member, parent, where in zip(members, parents, outs, strict=True)
        ]
        return finish_committee(out, config=config, cards=cards, test_set=tested)
    from distributed import wait

    run = uuid.uuid4().hex[:8]
    resources = gpu_resources(client)
    futures = [
        client.submit(
            fit_model,
            str(trainset),
            str(where),
            config=member,
            initial_model=None if parent is None else str(parent),
            test_set=tested,
            key=f"train-member-{k}-{run}",
            resources=resources,
            pure=False,
            retries=1,
        )
        for k, (member, parent, where) in enumerate(zip(members, parents, outs, strict=True))
    ]
    follow_training(futures, outs, config.epochs, progress=progress)
    wait(futures)
    failed = [(k, future) for k, future in enumerate(futures) if future.status == "error"]
    if failed:
        named = "; ".join(f"member {k} ({outs[k]}): {future.exception()!r}" for k, future in failed)
        raise RuntimeError(
            f"train: {len(failed)} of {config.members} committee members failed ({named}); "
            "the others are complete: a rerun trains only the failed ones"
        )
    cards = client.gather(futures)
    return client.submit(
        finish_committee,
        str(out),
        config=config,
        cards=cards,
        test_set=tested,
        key=f"train-committee-{run}",
        resources=resources,
        pure=False,
    ).result()


def train_model(
    trainset: str | Path,
    out: str | Path,
    *,
    config: TrainConfig,
    client: Any | None = None,
    progress: bool = True,
    initial_model: str | Path | None = None,
    test_set: str | Path | None = None,
) -> TrainReport:
    """Train the classifier on one worker of the cluster of ``client`` (or in-process).

    Parameters
    ----------
    trainset : path
        The training set (``lensdask simulate``).
    out : path
        The model directory.
    config : TrainConfig
    client : distributed.Client, optional
        The injected client: the training runs as one task (one per committee member), on
        a GPU worker when the cluster has one. None: in this process (members one after
        the other).
    progress : bool
        A progress bar over epochs (followed from the checkpoint state).
    initial_model, test_set : path, optional
        As :func:`fit_model`; a committee starts each member from the same member of the
        committee ``initial_model``.

    Returns
    -------
    TrainReport
    """
    trainset, out = Path(trainset), Path(out)
    check_trainset(trainset)
    if config.members > 1:
        card = train_committee(
            trainset,
            out,
            config=config,
            client=client,
            progress=progress,
            initial_model=initial_model,
            test_set=test_set,
        )
        return TrainReport(out=out, card=card)
    start = {
        "initial_model": None if initial_model is None else str(initial_model),
        "test_set": None if test_set is None else str(test_set),
    }
    if client is None:
        return TrainReport(out=out, card=fit_model(trainset, out, config=config, **start))
    future = client.submit(
        fit_model,
        str(trainset),
        str(out),
        config=config,
        **start,
        key=f"train-{uuid.uuid4().hex[:8]}",
        resources=gpu_resources(client),
        pure=False,
        retries=1,
    )
    follow_training([future], [out], config.epochs, progress=progress)
    return TrainReport(out=out, card=future.result())


def follow_training(futures: list[Any], outs: list[Path], epochs: int, *, progress: bool) -> None:
    """Show the epochs completed by the trainings into ``outs`` (read from their checkpoint
    states) until their ``futures`` are done."""
    from tqdm.auto import tqdm

    total = epochs * len(outs)
    with tqdm(total=total, desc="train", unit="epoch", disable=not progress) as bar:
        while not all(future.done() for future in futures):
            time.sleep(1.0)
            states = [state for out in outs if (state := read_state(out))]
            done = sum(state["epoch"] + 1 for state in states)
            if done > bar.n:
                bar.update(done - bar.n)
                last = states[-1]["history"][-1]
                bar.set_postfix({k: f"{v:.3f}" for k, v in last.items() if k != "epoch"})


def run(
    config: TrainConfig,
    io: StageIO,
    *,
    client: Any,
    progress: bool = True,
    in_process: bool = False,
) -> StageOutcome:
    """The ``train`` stage: :func:`train_model` on the ``trainset`` into the ``model``
    artifact, on Dask workers or (``in_process``) in this process."""
    from lensdask.nn.evaluate import committee_lines, metrics_lines

    report = train_model(
        io.need("trainset"),
        io.out("model"),
        config=config,
        client=None if in_process else client,
        progress=progress,
    )
    metrics = report.card["test_metrics"]
    return StageOutcome(
        outputs={"model": report.out, "ROC curve": report.out / "roc.png"},
        counts={"model test AUC": round(metrics["auc"], 4)},
        lines=[
            *committee_lines(report.card),
            *metrics_lines(metrics, report.card["model_id"], report.out),
        ],
    )
