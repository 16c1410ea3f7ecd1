"""Pixel scale in the model's contract: stamps of another scale are refused, or resampled
(``score.resample``) flux-conservingly to the model's scale, as reproject does it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from lensdask.cli import main
from lensdask.config import ScoreConfig
from lensdask.formats.cutout_store import read_tile
from lensdask.formats.model_dir import CARD_FILE, ModelError, load_model
from lensdask.score.resample import resample_stamps
from lensdask.score.scoring import score_cutouts

MODEL_SCALE = 0.2
"""arcsec/px of the model's card (KiDS r band)."""
TILES = {
    "KIDS_1.0_0.5": {"LRG": 20, "BG": 10},
    "KIDS_2.0_0.5": {"LRG": 5, "BG": 15},
    "KIDS_3.0_0.5": {"LRG": 3, "BG": 0},
    "KIDS_4.0_0.5": {"LRG": 2, "BG": 2},
}
"""Four tiles: the refusal names the first three and counts the fourth."""


def with_pixel_scale(model_dir: Path, scale: float | None) -> Path:
    """Give a model's card a ``pixel_scale`` (or take it away), as training writes it; the
    model id hashes ``model.keras`` only, so the card stays valid."""
    card = json.loads((model_dir / CARD_FILE).read_text())
    card.pop("pixel_scale", None)
    if scale is not None:
        card["pixel_scale"] = scale
    (model_dir / CARD_FILE).write_text(json.dumps(card))
    return model_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An untrained r-band model for 101x101 stamps of 0.2"/px."""
    from lensdask.testing import write_untrained_model

    path = write_untrained_model(tmp_path_factory.mktemp("scale-model") / "model", seed=11)
    return with_pixel_scale(path, MODEL_SCALE)


def scale_store(root: Path, scale: float) -> Path:
    """The four tiles at ``scale`` arcsec/px, one border cutout (NaN left half) per tile."""
    from lensdask.testing import write_cutout_store

    return write_cutout_store(root / f"cutouts-{scale}.zarr", TILES, pixel_scale=scale, edge=1)


@pytest.fixture(scope="module")
def coarse(tmp_path_factory) -> Path:
    """The store at 0.25"/px."""
    return scale_store(tmp_path_factory.mktemp("coarse"), 0.25)


def reference_wcs(scale: float, size: int):
    """A tangent-plane WCS of a ``size`` px stamp of ``scale`` arcsec/px, centred on its
    middle pixel: typed in here again, not taken from lensdask."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    # both stamps share the tangent point; reproject's result depends on where it is at the
    # level of rounding (samples exactly on the edge of the kernel's window), so the same
    wcs.wcs.crval = [180.0, 0.0]
    wcs.wcs.crpix = [(size + 1) / 2] * 2
    wcs.wcs.cdelt = [-scale / 3600, scale / 3600]
    return wcs


def reproject_reference(stamps: np.ndarray, scale: float, size: int) -> np.ndarray:
    """Each stamp resampled by calling reproject directly, one stamp at a time."""
    from reproject import reproject_adaptive

    out = [
        reproject_adaptive(
            (stamp.astype(np.float64), reference_wcs(scale, stamp.shape[0])),
            reference_wcs(MODEL_SCALE, size),
            shape_out=(size, size),
            conserve_flux=True,
            boundary_mode="ignore_threshold",
            return_footprint=False,
        )
        for stamp in stamps
    ]
    return np.asarray(out, dtype=np.float32)


def test_a_store_of_another_pixel_scale_is_refused_naming_the_scales(coarse, model, tmp_path):
    # refused from the store's and the card's metadata alone: no cluster is needed
    with pytest.raises(ModelError) as caught:
        score_cutouts(coarse, model, tmp_path / "s", client=None, progress=False)
    message = str(caught.value)
    assert str(coarse) in message and str(model) in message
    assert (
        "4 tiles (KIDS_1.0_0.5, KIDS_2.0_0.5, KIDS_3.0_0.5 and 1 more) have r-band stamps of "
        '0.25"/px; the model'
    ) in message
    assert 'takes 0.2"/px' in message and "--resample" in message
    assert not (tmp_path / "s").exists()


def test_a_pixel_scale_within_one_percent_is_scored_as_it_is(client, model, tmp_path):
    from lensdask.nn.evaluate import predict_images
    from lensdask.normalise import normalise_stamps

    near = scale_store(tmp_path, MODEL_SCALE * 1.009)
    report = score_cutouts(near, model, tmp_path / "s", client=client, progress=False)
    assert report.resampled == {} and report.units.ok
    scores = pd.read_parquet(tmp_path / "s" / "KIDS_1.0_0.5.parquet")
    stamps = read_tile(near, "KIDS_1.0_0.5", bands=("r",)).images["r"]
    direct = predict_images(load_model(model)[0], normalise_stamps(stamps), batch_size=256)
    np.testing.assert_allclose(scores["p_cnn"], direct, rtol=0, atol=2e-6)
    far = scale_store(tmp_path / "far", MODEL_SCALE * 1.011)
    with pytest.raises(ModelError, match=r'stamps of 0\.2022"/px'):
        score_cutouts(far, model, tmp_path / "s2", client=None, progress=False)


def test_resampled_scores_equal_stamps_resampled_by_reproject(client, coarse, model, tmp_path):
    from lensdask.nn.evaluate import predict_images
    from lensdask.normalise import nonfinite_fraction, normalise_stamps

    config = ScoreConfig(resample=True)
    out = tmp_path / "scores"
    report = score_cutouts(coarse, model, out, config=config, client=client, progress=False)
    assert report.units.ok and report.problems == []
    assert report.resampled == dict.fromkeys(TILES, 0.25) and report.resampled_now == 4
    assert report.resampled_summary() == (
        '4 of 4 tiles resampled (4 from 0.25"/px) to the model\'s 0.2"/px, flux-conserving '
        "(reproject), 4 of them scored now"
    )
    network = load_model(model)[0]
    for tile in TILES:
        stamps = reproject_reference(read_tile(coarse, tile, bands=("r",)).images["r"], 0.25, 101)
        has_data = nonfinite_fraction(stamps) < 1
        expected = predict_images(network, normalise_stamps(stamps[has_data]), batch_size=256)
        scores = pd.read_parquet(out / f"{tile}.parquet")
        np.testing.assert_allclose(scores["p_cnn"], expected, rtol=0, atol=2e-6)
        # the fraction of missing pixels is that of the stamps the network saw
        np.testing.assert_array_equal(scores["nonfinite_fraction"], nonfinite_fraction(stamps))
    assert pd.read_parquet(out / "KIDS_1.0_0.5.parquet")["nonfinite_fraction"].iloc[-1] > 0.5
    again = score_cutouts(coarse, model, out, config=config, client=client, progress=False)
    assert (again.written, again.skipped, again.resampled_now) == (0, 4, 0)


def test_the_score_command_resamples_and_says_so(client, coarse, model, tmp_path):
    args = ["score", str(coarse), "--model", str(model), "--out", str(tmp_path / "s")]
    address = ["--cluster", client.scheduler.address, "--no-progress"]
    refused = CliRunner().invoke(main, [*args, *address])
    assert refused.exit_code != 0 and 'stamps of 0.25"/px' in refused.output
    result = CliRunner().invoke(main, [*args, "--resample", *address])
    assert result.exit_code == 0, result.output
    assert (
        'score: 4 of 4 tiles resampled (4 from 0.25"/px) to the model\'s 0.2"/px, '
        "flux-conserving (reproject)"
    ) in result.output
    assert "--resample / --no-resample" in CliRunner().invoke(main, ["score", "--help"]).output


def test_stamps_too_small_for_the_model_are_refused(model, tmp_path):
    fine = scale_store(tmp_path, 0.15)  # 101 px of 0.15" = 15.15", the model takes 20.2"
    config = ScoreConfig(resample=True)
    with pytest.raises(ModelError, match=r'cover 15\.15" a side.*takes 20\.2" \(101 px of 0\.2"\)'):
        score_cutouts(fine, model, tmp_path / "s", config=config, client=None, progress=False)


def test_resampling_needs_the_cards_pixel_scale(coarse, tmp_path):
    from lensdask.testing import write_untrained_model

    bare = write_untrained_model(tmp_path / "bare", seed=11)  # a card without pixel_scale
    config = ScoreConfig(resample=True)
    with pytest.raises(ModelError, match="records no pixel_scale"):
        score_cutouts(coarse, bare, tmp_path / "s", config=config, client=None, progress=False)


def centroid(image: np.ndarray) -> tuple[float, float, float]:
    """Sum, and x and y of the centroid relative to the middle pixel."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]] - (image.shape[0] - 1) / 2
    total = float(np.nansum(image))
    return total, float(np.nansum(image * xx)) / total, float(np.nansum(image * yy)) / total


@pytest.mark.parametrize("scale", [0.25, 0.3, 0.21, 0.17])
def test_resampling_conserves_flux(scale):
    # A Gaussian galaxy of sigma 0.4" well inside the model's 20.2" field. The Gaussian
    # kernel's weights are normalised per output pixel and scaled by the Jacobian, so the
    # flux is kept up to how the truncated window samples the input grid: measured 0.005%
    # at 0.25 -> 0.2 and at most 0.42% (near 0.21) over 0.17-0.3"/px; 1% bounds that.
    yy, xx = np.mgrid[:101, :101] - 50
    sigma = 0.4 / scale
    galaxy = 1000 * np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    out = resample_stamps(galaxy[None], from_scale=scale, to_scale=MODEL_SCALE, size=101)
    assert out.shape == (1, 101, 101) and out.dtype == np.float32
    total, x, y = centroid(out[0])
    assert total == pytest.approx(galaxy.sum(), rel=0.01)
    # centred to 0.01 px (0.002"): samples on the window's edge can break the symmetry
    assert abs(x) < 0.01 and abs(y) < 0.01


def test_a_point_source_stays_centred_and_offsets_scale():
    stamps = np.zeros((2, 101, 101), dtype=np.float32)
    stamps[0, 50, 50] = 100.0  # on the centre pixel: where the cutouts put the target
    stamps[1, 50, 60] = 100.0  # 10 px of 0.25" east of it: 12.5 px of 0.2"
    out = resample_stamps(stamps, from_scale=0.25, to_scale=MODEL_SCALE, size=101)
    total, x, y = centroid(out[0])
    assert np.unravel_index(np.nanargmax(out[0]), out[0].shape) == (50, 50)
    assert abs(x) < 0.01 and abs(y) < 0.01 and total == pytest.approx(100.0, rel=0.01)
    _, x, y = centroid(out[1])
    assert x == pytest.approx(12.5, abs=0.02) and abs(y) < 0.01


def test_infinite_pixels_are_missing_data_not_spread():
    stamps = np.ones((1, 101, 101), dtype=np.float32)
    stamps[0, 20, 20], stamps[0, 70, 70] = np.inf, -np.inf
    out = resample_stamps(stamps, from_scale=0.25, to_scale=MODEL_SCALE, size=101)
    assert not np.isinf(out).any()
    assert 0 < np.isnan(out).sum() < 100  # a few pixels around each, nothing else


def test_a_missing_reproject_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "reproject", None)
    with pytest.raises(ImportError, match=r"lensdask\[resample\]"):
        resample_stamps(np.ones((1, 11, 11)), from_scale=0.25, to_scale=0.2, size=9)
