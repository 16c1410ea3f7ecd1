"""Fine-tuning a classifier on graded candidates: learning from the graders.

The grades of the candidates (``lensdask inspect export``) label real survey galaxies:
candidates the graders accept become lenses, those they reject hard negatives (the
spirals, rings and mergers the network mistook for lenses). A share of them is held out to
evaluate; the rest, in augmented copies, is mixed with a replay sample of the original
training set, so that the network does not forget the simulations, and the model trains on
from its weights with the training loop of :mod:`lensdask.nn.train` (checkpoints per epoch,
resumed after an interruption).

Layout of the output model directory ``OUT`` (besides what :mod:`lensdask.nn.train`
writes there)::

    OUT/finetune-set.zarr       the fine-tune set, in the layout of a training set
                                (:mod:`lensdask.formats.trainset`): train and val mix
                                graded and replayed examples, test holds the held-out
                                graded candidates
    OUT/holdout/                ROC and p_CNN plots on the held-out graded candidates

Its card's ``test_metrics`` are on the original training set's test split (comparable with
the parent's), and its ``finetune`` section records the parent model, the grades used
(per grade and grader), the composition of the set and the metrics on the held-out grades.

Labels (:func:`grade_labels`): a candidate with at least ``min_grades`` grades whose
graders agree (a share of at least ``agreement`` give the same verdict: lens = A or B,
non-lens = C or D) is a lens or a non-lens by that verdict; with ``positive_p``, a lens is
instead a candidate with ``P = p_cnn * s_ave / 10`` at or above it (the ranking's P), and
the agreed non-lenses stay negatives. Every other graded candidate is left out, and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensdask.config import FinetuneConfig
from lensdask.formats.grades import GRADE_VALUES
from lensdask.stages import StageIO, StageOutcome

logger = logging.getLogger(__name__)

SET_DIR = "finetune-set.zarr"
"""The fine-tune set, in the output model directory."""
HOLDOUT_DIR = "holdout"
"""Plots of the held-out graded candidates, in the output model directory."""
CHUNK = 256
"""Examples per Zarr chunk of the fine-tune set."""
GRADED_KIND = "graded"
"""``kind`` of the graded examples in the fine-tune set (replayed ones keep theirs)."""
SCALE_TOLERANCE = 0.01
"""Relative difference of pixel scales above which a model does not fit the stamps."""
TRAINING_FIELDS = ("epochs", "batch_size", "learning_rate", "patience", "augment")
"""Fields of :class:`~lensdask.config.FinetuneConfig` that do not change the fine-tune set."""


class FinetuneError(ValueError):
    """Grades, candidates or a model that a fine-tune cannot take."""


# --- pure kernels --------------------------------------------------------------------------


def grade_labels(
    grades: pd.DataFrame, p_cnn: Mapping[str, float], *, config: FinetuneConfig
) -> pd.DataFrame:
    """The label of each graded candidate from its grades.

    Parameters
    ----------
    grades : pandas.DataFrame
        ``candidate_id``, ``grader``, ``grade`` (A/B/C/D), checked.
    p_cnn : mapping of str to float
        The candidates' scores (for P with ``config.positive_p``).
    config : FinetuneConfig
        ``min_grades``, ``agreement``, ``positive_p``.

    Returns
    -------
    pandas.DataFrame
        A row per graded candidate, sorted by ID: ``candidate_id``, ``grades``,
        ``lens_votes`` (A or B), ``s_ave``, ``p_value`` (P), ``label`` (1 lens, 0 non-lens,
        -1 left out) and ``reason`` (why it is left out; empty otherwise).
    """
    says_lens = grades["grade"].isin(["A", "B"])
    frame = (
        pd.DataFrame(
            {
                "candidate_id": grades["candidate_id"].astype(str),
                "value": grades["grade"].map(GRADE_VALUES).astype(float),
                "lens": says_lens.astype(int),
            }
        )
        .groupby("candidate_id", sort=True)
        .agg(grades=("value", "size"), lens_votes=("lens", "sum"), s_ave=("value", "mean"))
        .reset_index()
    )
    scores = frame["candidate_id"].map(p_cnn).astype(float)
    frame["p_value"] = scores * frame["s_ave"] / 10
    share_lens = frame["lens_votes"] / frame["grades"]
    agreed_lens = share_lens >= config.agreement
    agreed_non = (1 - share_lens) >= config.agreement
    enough = frame["grades"] >= config.min_grades
    positive = agreed_lens if config.positive_p is None else frame["p_value"] >= config.positive_p
    label = np.where(enough & positive, 1, np.where(enough & agreed_non & ~positive, 0, -1))
    reason = np.where(
        ~enough,
        f"fewer than {config.min_grades} grades",
        np.where(label == -1, "graders disagree" if config.positive_p is None else "P too low", ""),
    )
    frame["label"] = label.astype(np.int8)
    frame["reason"] = reason
    return frame


def unit_draws(ids: Sequence[str], *, seed: int, what: str) -> np.ndarray:
    """A uniform number in [0, 1) per ID, from the SHA-256 of ``seed``, ``what`` and the ID:
    the same for an ID whatever other IDs there are."""
    out = np.empty(len(ids))
    for k, cid in enumerate(ids):
        digest = hashlib.sha256(f"{seed}\n{what}\n{cid}".encode()).digest()
        out[k] = (int.from_bytes(digest[:8], "big") >> 11) * 2.0**-53
    return out


def split_candidates(
    labels: pd.DataFrame, *, holdout: float, val_fraction: float, seed: int
) -> np.ndarray:
    """Split the labelled candidates into ``train``, ``val`` and ``test`` (held out),
    separately for lenses and non-lenses, so each split has its share of both; each
    candidate is in exactly one split.

    Parameters
    ----------
    labels : pandas.DataFrame
        ``candidate_id`` and ``label`` (0 or 1) of the used candidates.
    holdout, val_fraction : float
        Shares of the candidates held out, and of the others that validate.
    seed : int

    Returns
    -------
    ndarray of str, shape (N,)
        The split of each row.
    """
    ids = labels["candidate_id"].to_numpy(dtype=str)
    draws = unit_draws(ids, seed=seed, what="split")
    split = np.full(len(ids), "train", dtype=object)
    for value in (0, 1):
        rows = np.flatnonzero(labels["label"].to_numpy() == value)
        rows = rows[np.argsort(draws[rows], kind="stable")]
        n_test = round(holdout * rows.size)
        n_val = max(1, round(val_fraction * (rows.size - n_test))) if rows.size > n_test else 0
        split[rows[:n_test]] = "test"
        split[rows[n_test : n_test + n_val]] = "val"
    return split.astype(str)


def replay_size(graded: int, *, share: float, available: int) -> int:
    """Replayed examples to mix with ``graded`` ones so that they make ``share`` of the
    whole (at most ``available``)."""
    return min(available, round(graded * share / (1 - share)))


def replay_sample(available: int, size: int, *, seed: int, split: str) -> np.ndarray:
    """Indices of ``size`` examples of the original split drawn without replacement, sorted."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, *split.encode()]))
    return np.sort(rng.choice(available, size=size, replace=False)).astype(np.int64)


def grade_counts(grades: pd.DataFrame) -> dict[str, Any]:
    """Grades per letter and per grader and letter (JSON types), for the card."""
    letters = list(GRADE_VALUES)
    by_grader = pd.crosstab(grades["grader"], grades["grade"]).reindex(
        columns=letters, fill_value=0
    )
    return {
        "rows": len(grades),
        "candidates": int(grades["candidate_id"].nunique()),
        "by_grade": {k: int((grades["grade"] == k).sum()) for k in letters},
        "by_grader": {
            str(name): {k: int(v) for k, v in row.items()} for name, row in by_grader.iterrows()
        },
    }


# --- checks of the inputs ------------------------------------------------------------------


def model_fit_problems(model: Path, cutouts: Path, *, tiles: Sequence[str] | None = None):
    """Why the model of ``model`` cannot learn from the stamps of ``cutouts``: its card's
    normalisation, band, stamp size (:func:`lensdask.preflight.model_problems`) and pixel
    scale (against each of ``tiles``, default every complete tile, within
    :data:`SCALE_TOLERANCE`)."""
    from lensdask.formats.cutout_store import complete_tiles, read_store_attrs, read_tile_attrs
    from lensdask.formats.model_dir import read_card
    from lensdask.preflight import model_problems

    problems = model_problems(model, read_store_attrs(cutouts), cutouts)
    if problems:
        return problems
    card = read_card(model)
    band = card.get("band") or "r"
    scale = card.get("pixel_scale")
    scale = scale.get(band) if isinstance(scale, Mapping) else scale
    if scale is None:
        return [f"model {model}: card.json records no pixel_scale to check the stamps against"]
    for tile in complete_tiles(cutouts) if tiles is None else tiles:
        found = (read_tile_attrs(cutouts, tile).get("pixel_scale") or {}).get(band)
        if found is None or abs(float(found) / float(scale) - 1) > SCALE_TOLERANCE:
            problems.append(
                f'model {model}: made for {float(scale):.4g}"/px {band}-band stamps; tile '
                f"{tile} of {cutouts} has {found if found is None else f'{found:.4g}'}"
            )
    return problems


def check_finetune(config: FinetuneConfig, io: StageIO) -> list[str]:
    """Pre-flight: the model fits the cutouts (band, size, pixel scale, normalisation)."""
    model, cutouts = io.optional("model"), io.optional("cutouts")
    if model is None or cutouts is None or {"model", "cutouts"} & io.made:
        return []
    return model_fit_problems(model, cutouts)


# --- reading the graded candidates ---------------------------------------------------------


def locate_cutouts(cutouts: Path, ids: Sequence[str], *, band: str) -> pd.DataFrame:
    """Where each ID's cutout is: ``candidate_id``, ``tile``, ``row`` of the IDs with a
    cutout with finite pixels in ``band`` (others are left out)."""
    from lensdask.formats.cutout_store import complete_tiles, read_tile_attrs, read_tile_columns

    wanted, frames = set(ids), []
    for tile in complete_tiles(cutouts):
        columns = read_tile_columns(cutouts, tile, ["ID", "nonfinite_fraction"])
        bands = list(read_tile_attrs(cutouts, tile)["bands"])
        if band not in bands:
            continue
        found = np.asarray(columns["nonfinite_fraction"])[:, bands.index(band)] < 1
        tile_ids = pd.Series(columns["ID"].astype(object)).astype(str)
        rows = np.flatnonzero(tile_ids.isin(wanted).to_numpy() & found)
        frames.append(
            pd.DataFrame(
                {"candidate_id": tile_ids.iloc[rows].to_numpy(), "tile": tile, "row": rows}
            )
        )
    located = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["candidate_id", "tile", "row"])
    )
    return located.drop_duplicates("candidate_id")


def read_checked_grades(
    grades_path: Path, candidate_ids: Sequence[str], no_cutout: Sequence[str]
) -> pd.DataFrame:
    """The grades file, refused (every bad row named by file and line) when a grade is of a
    candidate that is not in the candidates table or has no cutout."""
    from lensdask.formats.files import problem_message
    from lensdask.formats.grades import GradeError, grade_problems, read_grades

    grades = read_grades(grades_path)  # letters, graders, repeats: checked by line
    problems = grade_problems(
        grades,
        known=candidate_ids,
        no_cutout=no_cutout,
        where=lambda k: f"{grades_path} line {k + 2}",
    )
    if problems:
        raise GradeError(problem_message(grades_path, problems))
    return grades


def read_stamps(cutouts: Path, located: pd.DataFrame, *, band: str) -> np.ndarray:
    """The normalised stamps (N, size, size) in [0, 255] of ``located`` rows, in order."""
    from lensdask.formats.cutout_store import read_band_rows
    from lensdask.normalise import normalise_stamps

    size = None
    parts: dict[int, np.ndarray] = {}
    for tile, group in located.groupby("tile", sort=True):
        stamps = read_band_rows(cutouts, tile, band, group["row"].to_numpy())
        size = stamps.shape[1]
        for position, stamp in zip(group.index, normalise_stamps(stamps), strict=True):
            parts[position] = stamp
    if not parts:
        return np.zeros((0, size or 0, size or 0), np.float32)
    return np.stack([parts[k] for k in located.index])


# --- the fine-tune set ---------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneSet:
    """The fine-tune set written by :func:`build_finetune_set`."""

    path: Path
    labels: pd.DataFrame
    """Every graded candidate: :func:`grade_labels` plus ``split`` (empty where unused)."""
    composition: dict[str, dict[str, int]]
    """Per split: ``graded_lenses``, ``graded_non_lenses`` (examples, with copies),
    ``replay_lenses``, ``replay_non_lenses``."""
    grades: dict[str, Any]
    """:func:`grade_counts` of the grades file."""
    plan_hash: str


def build_finetune_set(
    grades_path: str | Path,
    candidates: str | Path,
    cutouts: str | Path,
    trainset: str | Path,
    out: str | Path,
    *,
    card: dict[str, Any],
    config: FinetuneConfig,
) -> FinetuneSet:
    """Label the graded candidates, split them, copy and augment them, mix in the replay
    sample and write the fine-tune set at ``out`` (kept when it is already the same plan).

    Raises
    ------
    lensdask.formats.grades.GradeError
        Grades of unknown candidates or of candidates without a cutout (every one named).
    FinetuneError
        Too few lenses or non-lenses, saying how many there are.
    """
    from lensdask.formats.candidates import read_candidates
    from lensdask.formats.trainset import ChunkReader, read_attrs, read_table
    from lensdask.nn.data import Augmentation, augment
    from lensdask.normalise import NORMALISATION
    from lensdask.units import config_hash, read_manifest

    grades_path, cutouts, trainset, out = map(Path, (grades_path, cutouts, trainset, out))
    band = card.get("band") or "r"
    table = read_candidates(candidates)
    ids = table["candidate_id"].astype(str).tolist()
    located = locate_cutouts(cutouts, ids, band=band)
    no_cutout = sorted(set(ids) - set(located["candidate_id"]))
    grades = read_checked_grades(grades_path, ids, no_cutout)
    labels = grade_labels(grades, dict(zip(ids, table["p_cnn"], strict=True)), config=config)
    used = labels[labels["label"] >= 0]
    lenses, non_lenses = int((used["label"] == 1).sum()), int((used["label"] == 0).sum())
    if lenses < config.min_positives or non_lenses < config.min_negatives:
        raise FinetuneError(
            f"{grades_path}: {lenses} lenses and {non_lenses} non-lenses among "
            f"{len(labels)} graded candidates ({len(labels) - len(used)} left out: too few "
            f"grades or graders who disagree); a fine-tune needs at least "
            f"{config.min_positives} lenses (finetune.min_positives) and "
            f"{config.min_negatives} non-lenses (finetune.min_negatives)"
        )
    labels["split"] = ""
    labels.loc[used.index, "split"] = split_candidates(
        used, holdout=config.holdout, val_fraction=config.val_fraction, seed=config.seed
    )
    original = read_attrs(trainset)
    set_config = {k: v for k, v in dataclasses.asdict(config).items() if k not in TRAINING_FIELDS}
    plan_hash = config_hash(
        {
            "labels": labels[["candidate_id", "label", "split"]].to_numpy().tolist(),
            "parent": card["model_id"],
            "trainset": original.get("plan_hash"),
            "cutouts": read_manifest(cutouts).digest,
            "config": set_config,
        }
    )
    result = FinetuneSet(
        path=out, labels=labels, composition={}, grades=grade_counts(grades), plan_hash=plan_hash
    )
    if (out / "zarr.json").is_file() and _finished(out, plan_hash):
        return dataclasses.replace(result, composition=read_attrs(out)["composition"])

    located = located.set_index("candidate_id")
    splits, composition = {}, {}
    for split in ("train", "val", "test"):
        chosen = labels[labels["split"] == split].reset_index(drop=True)
        where = located.loc[chosen["candidate_id"]].reset_index()
        images = read_stamps(cutouts, where, band=band)
        label = chosen["label"].to_numpy(np.int8)
        copies = config.copies if split == "train" else 1
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2, *split.encode()]))
        images = np.concatenate(
            [images] + [augment(images, rng, config=Augmentation()) for _ in range(copies - 1)]
        )
        arrays = {
            "images": images,
            "label": np.tile(label, copies),
            "kind": np.full(images.shape[0], GRADED_KIND, dtype=object),
            "source_id": np.tile(where["candidate_id"].to_numpy(object), copies),
            "source_tile": np.tile(where["tile"].to_numpy(object), copies),
        }
        graded = len(images)
        replayed = 0
        if split != "test" and config.replay > 0:
            reader = ChunkReader(trainset, split)
            size = replay_size(graded, share=config.replay, available=len(reader))
            index = replay_sample(len(reader), size, seed=config.seed, split=split)
            replay_images, replay_labels = reader.read(index)
            sources = read_table(trainset, split).iloc[index]
            arrays = {
                "images": np.concatenate([arrays["images"], replay_images]),
                "label": np.concatenate([arrays["label"], replay_labels.astype(np.int8)]),
                **{
                    name: np.concatenate([arrays[name], sources[name].to_numpy(object)])
                    for name in ("kind", "source_id", "source_tile")
                },
            }
            replayed = size
        order = np.random.default_rng(
            np.random.SeedSequence([config.seed, 3, *split.encode()])
        ).permutation(len(arrays["label"]))
        splits[split] = {name: values[order] for name, values in arrays.items()}
        graded_labels, replay_labels_ = arrays["label"][:graded], arrays["label"][graded:]
        composition[split] = {
            "graded_lenses": int((graded_labels == 1).sum()),
            "graded_non_lenses": int((graded_labels == 0).sum()),
            "replay_lenses": int((replay_labels_ == 1).sum()),
            "replay_non_lenses": int((replay_labels_ == 0).sum()),
        }
        logger.info("finetune: %s split: %d graded, %d replayed", split, graded, replayed)
    size = int(card["input_shape"][0])
    attrs = {
        "plan_hash": plan_hash,
        "config": set_config,
        "normalisation": NORMALISATION,
        "band": band,
        "pixel_scale": card.get("pixel_scale"),
        "size": size,
        "counts": {split: len(arrays["label"]) for split, arrays in splits.items()},
        "composition": composition,
        "parent_model": card["model_id"],
    }
    _write_set(out, splits, attrs=attrs, size=size)
    return dataclasses.replace(result, composition=composition)


def _finished(out: Path, plan_hash: str) -> bool:
    from lensdask.formats.trainset import read_attrs
    from lensdask.units import StaleOutputError, read_manifest

    try:
        read_manifest(out)
    except StaleOutputError:
        return False
    return read_attrs(out).get("plan_hash") == plan_hash


def _write_set(
    out: Path, splits: Mapping[str, Mapping[str, np.ndarray]], *, attrs: dict, size: int
) -> None:
    """Write every split chunk by chunk, then the manifest (the commit point)."""
    import shutil

    from lensdask.formats.trainset import prepare_trainset, write_batch_arrays
    from lensdask.units import Manifest, write_manifest

    if out.exists():
        shutil.rmtree(out)  # a set of another plan, or one whose writing was interrupted
    prepare_trainset(
        out,
        attrs=attrs,
        split_sizes={split: len(arrays["label"]) for split, arrays in splits.items()},
        chunk=CHUNK,
        size=size,
        parameters=[],
    )
    for split, arrays in splits.items():
        for index, start in enumerate(range(0, len(arrays["label"]), CHUNK)):
            part = {name: values[start : start + CHUNK] for name, values in arrays.items()}
            write_batch_arrays(out, split, index=index, start=start, arrays=part)
    write_manifest(out, Manifest(stage="finetune", units={}))


# --- the fine-tune -------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneReport:
    """Outcome of :func:`finetune_model`."""

    out: Path
    card: dict[str, Any]
    set: FinetuneSet


def evaluate_holdout(out: str | Path) -> dict[str, Any]:
    """Metrics of the model (or committee) in ``out`` on its fine-tune set's held-out
    graded candidates (plots into ``out/holdout``)."""
    from lensdask.devices import set_backend_env

    set_backend_env()
    from lensdask.nn.evaluate import evaluate_model

    out = Path(out)
    metrics = evaluate_model(
        out, out / SET_DIR, out=out / HOLDOUT_DIR, title="held-out graded candidates"
    )
    return metrics.as_dict()


def finetune_model(
    model: str | Path,
    grades: str | Path,
    candidates: str | Path,
    cutouts: str | Path,
    trainset: str | Path,
    out: str | Path,
    *,
    config: FinetuneConfig,
    client: Any | None = None,
    progress: bool = True,
) -> FinetuneReport:
    """Fine-tune ``model`` on the graded candidates into the model directory ``out``.

    Parameters
    ----------
    model : path
        The parent model directory.
    grades : path
        Grades CSV (``candidate_id,grader,grade``; ``lensdask inspect export``).
    candidates : path
        The candidates table the grades are of (with ``p_cnn``).
    cutouts : path
        The cutout store holding the candidates' cutouts.
    trainset : path
        The parent's original training set: the replay sample, and the test split the
        fine-tuned model is evaluated on.
    out : path
        The new model directory.
    config : FinetuneConfig
    client : distributed.Client, optional
        The training runs as one task on a worker of its cluster (a GPU worker where there
        is one), as ``lensdask train``; None: in this process.
    progress : bool
        A progress bar over epochs.

    Returns
    -------
    FinetuneReport

    Raises
    ------
    lensdask.formats.model_dir.ModelError
        The model does not fit the cutouts (band, size, pixel scale, normalisation).
    """
    from lensdask.formats.files import write_json_atomic
    from lensdask.formats.model_dir import CARD_FILE, ModelError, read_card
    from lensdask.formats.trainset import check_trainset
    from lensdask.nn.train import train_model

    model, out, cutouts, trainset = Path(model), Path(out), Path(cutouts), Path(trainset)
    check_trainset(trainset)
    problems = model_fit_problems(model, cutouts)
    if problems:
        raise ModelError("; ".join(problems))
    parent = read_card(model)
    out.mkdir(parents=True, exist_ok=True)
    built = build_finetune_set(
        grades, candidates, cutouts, trainset, out / SET_DIR, card=parent, config=config
    )
    training = parent.get("training", {})
    train_config = config.train_config(width=float(training.get("width", 1.0)))
    if "committee" in parent:  # every member from its own weights, at its own width
        widths = tuple(float(member["width"]) for member in parent["committee"]["members"])
        train_config = dataclasses.replace(
            train_config,
            members=len(widths),
            member_widths=widths,
            combination=parent["committee"]["combination"],
        )
    report = train_model(
        out / SET_DIR,
        out,
        config=train_config,
        client=client,
        progress=progress,
        initial_model=model,
        test_set=trainset,
    )
    card = report.card
    done = card.get("finetune", {})
    if done.get("plan_hash") == built.plan_hash and "holdout_metrics" in done:
        return FinetuneReport(out=out, card=card, set=built)
    if client is None:
        holdout = evaluate_holdout(out)
    else:
        holdout = client.submit(evaluate_holdout, str(out), pure=False).result()
    used = built.labels[built.labels["label"] >= 0]
    card["finetune"] = {
        "parent": {"model_id": parent["model_id"], "path": str(model.resolve())},
        "grades": {"file": str(Path(grades).resolve()), **built.grades},
        "labelled": {
            "lenses": int((used["label"] == 1).sum()),
            "non_lenses": int((used["label"] == 0).sum()),
            "left_out": int(len(built.labels) - len(used)),
        },
        "composition": built.composition,
        "replay_share": config.replay,
        "holdout_metrics": holdout,
        "original_test_metrics": card["test_metrics"],
        "plan_hash": built.plan_hash,
    }
    # model.keras is unchanged: the card's model_id still holds
    write_json_atomic(out / CARD_FILE, card)
    return FinetuneReport(out=out, card=card, set=built)


def run(
    config: FinetuneConfig,
    io: StageIO,
    *,
    client: Any,
    progress: bool = True,
    in_process: bool = False,
) -> StageOutcome:
    """The ``finetune`` stage: :func:`finetune_model` of the ``model`` artifact into the
    ``finetuned_model`` artifact."""
    from lensdask.nn.evaluate import metrics_lines

    report = finetune_model(
        io.need("model"),
        io.need("grades"),
        io.need("candidates"),
        io.need("cutouts"),
        io.need("trainset"),
        io.out("finetuned_model"),
        config=config,
        client=None if in_process else client,
        progress=progress,
    )
    card, section = report.card, report.card["finetune"]
    holdout = section["holdout_metrics"]
    lines = [
        f"finetune: from model {section['parent']['model_id']}: "
        f"{section['labelled']['lenses']} lenses and {section['labelled']['non_lenses']} "
        f"non-lenses graded ({section['labelled']['left_out']} left out)",
        f"held-out grades: AUC {holdout['auc']:.4f}, TPR at 1% FPR "
        f"{holdout['tpr_at_fpr_1pct']:.3f} ({holdout['positives']} lenses, "
        f"{holdout['negatives']} non-lenses)",
        *metrics_lines(card["test_metrics"], card["model_id"], report.out),
    ]
    return StageOutcome(
        outputs={"fine-tuned model": report.out},
        counts={
            "fine-tuned test AUC": round(card["test_metrics"]["auc"], 4),
            "held-out grades AUC": round(holdout["auc"], 4),
        },
        lines=lines,
    )
