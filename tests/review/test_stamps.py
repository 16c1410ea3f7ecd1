"""Colour stamps: the Lupton kernel against astropy, the grey fallback, the per-tile stage on
the LocalCluster (resume, failures) and the contact sheets."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pandas as pd
import pytest
from astropy.visualization import make_lupton_rgb
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image
from review_inputs import COLOUR_TILES, N_CANDIDATES, R_ONLY_TILE

from lensdask.config import ConfigError, StampConfig
from lensdask.review.rank import write_ranking
from lensdask.review.stamps import (
    INDEX_COLUMNS,
    bad_label,
    draw_sheet,
    lupton_stamp,
    make_stamps,
    read_stamp_index,
    render_stamps,
    sheet_figure,
    sheet_order,
    stamp_name,
)
from lensdask.runner import FAILURES_FILE
from lensdask.units import read_marker


def noisy(rng: np.random.Generator, sky: float, sigma: float) -> np.ndarray:
    return (sky + sigma * rng.standard_normal((101, 101))).astype(np.float32)


def test_colour_stamp_is_lupton_of_sky_subtracted_bands_in_noise_units():
    rng = np.random.default_rng(0)
    i, r, g = noisy(rng, 10.0, 2.0), noisy(rng, 5.0, 1.0), noisy(rng, 1.0, 0.5)
    r[50, 50] += 40.0
    config = StampConfig()
    rgb = lupton_stamp(i, r, g, noise=r, config=config)
    # reference: astropy on hand-scaled bands (median sky, 1.4826 MAD of r), flipped north up
    sigma_r = 1.4826 * np.median(np.abs(r - np.median(r)))
    bands = [(band - np.median(band)) / sigma_r for band in (i, r, g)]
    expected = make_lupton_rgb(*bands, minimum=0.0, stretch=5.0, Q=8.0)[::-1]
    assert rgb.dtype == np.uint8 and rgb.shape == (101, 101, 3)
    assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= 1


def test_stamp_is_north_up_and_a_red_source_is_red():
    blank = np.zeros((101, 101), dtype=np.float32)
    blank[::2, ::2] = 1.0  # some sky noise (MAD > 0)
    i = blank.copy()
    i[3, 50] += 200.0  # near the bottom of the sky (row 3 of the cutout), in i only
    rgb = lupton_stamp(i, blank, blank, noise=blank, config=StampConfig())
    row, col = np.unravel_index(np.argmax(rgb[..., 0]), rgb.shape[:2])
    assert (row, col) == (100 - 3, 50)
    assert rgb[row, col, 0] > 200 and rgb[row, col, 1] == rgb[row, col, 2] == 0


def test_missing_or_empty_colour_band_gives_the_r_band_in_grey():
    rng = np.random.default_rng(1)
    r = noisy(rng, 0.0, 1.0)
    r[40:60, 40:60] += 30.0
    colour, mono, is_colour = render_stamps({"r": r}, config=StampConfig())
    assert not is_colour
    assert (colour[..., 0] == colour[..., 1]).all() and (colour[..., 1] == colour[..., 2]).all()
    assert (colour[..., 0] == mono).all() and mono.shape == (101, 101)
    empty = np.full_like(r, np.nan)
    _, _, is_colour = render_stamps({"r": r, "g": empty, "i": r}, config=StampConfig())
    assert not is_colour
    colour, _, is_colour = render_stamps({"r": r, "g": r * 0.5, "i": r * 2}, config=StampConfig())
    assert is_colour and (colour[50, 50, 0] > colour[50, 50, 2])  # i brighter than g: red


def test_nan_pixels_are_shown_as_sky():
    rng = np.random.default_rng(2)
    r = noisy(rng, 100.0, 1.0)
    r[:, :50] = np.nan
    colour, mono, _ = render_stamps({"r": r, "g": r, "i": r}, config=StampConfig())
    assert (mono[:, :50] == 0).all() and (colour[:, :50] == 0).all()


def test_stamp_config_is_validated_naming_the_key():
    with pytest.raises(ConfigError, match=r"stamps\.rgb_bands"):
        StampConfig(rgb_bands=("i", "r"))
    with pytest.raises(ConfigError, match=r"stamps\.stretch"):
        StampConfig(stretch=0)
    with pytest.raises(ConfigError, match=r"stamps\.sheet_limit"):
        StampConfig(sheet_limit=0)


def test_stamp_names_are_safe_file_names():
    assert stamp_name("KiDS J122456.016+005048.05") == "KiDS_J122456.016+005048.05"
    assert stamp_name("a/b c") == "a_b_c"


def test_every_candidate_gets_colour_and_mono_pngs(review_data):
    index = read_stamp_index(review_data.stamps)
    assert list(index.columns) == list(INDEX_COLUMNS)
    assert sorted(index["candidate_id"]) == sorted(review_data.candidates["ID"])
    r_only = set(R_ONLY_TILE)
    assert (index["colour"] == ~index["THELI_NAME"].isin(r_only)).all()
    for row in index.itertuples():
        with Image.open(review_data.stamps / row.colour_png) as image:
            assert image.size == (101, 101) and image.mode == "RGB"
        with Image.open(review_data.stamps / row.mono_png) as image:
            assert image.size == (101, 101) and image.mode == "L"
    for tile, samples in {**COLOUR_TILES, **R_ONLY_TILE}.items():
        marker = read_marker(review_data.stamps, tile)
        assert marker.rows == sum(samples.values())
        assert marker.extra["grey"] == (sum(samples.values()) if tile in r_only else 0)


def test_contact_sheet_shows_all_candidates_by_decreasing_p_cnn(review_data):
    sheets = sorted((review_data.stamps / "sheets").glob("sheet_*.png"))
    assert [path.name for path in sheets] == ["sheet_00001.png"]  # 11 candidates, 30 a sheet
    index = read_stamp_index(review_data.stamps)
    ranked, label = sheet_order(
        review_data.candidates.rename(columns={"ID": "candidate_id"}), index, None
    )
    assert label == "p_CNN"
    assert list(ranked["candidate_id"]) == list(review_data.candidates["ID"])  # file order
    assert ranked["score"].is_monotonic_decreasing


def test_contact_sheet_labels_cutouts_with_bad_pixels(review_data, tmp_path):
    """A candidate's bad_fraction comes along in ranked order and is drawn as ``bad 12%``."""
    candidates = review_data.candidates.rename(columns={"ID": "candidate_id"})
    candidates["bad_fraction"] = np.linspace(0.0, 0.2, len(candidates), dtype=np.float32)
    index = read_stamp_index(review_data.stamps)
    ranked, _ = sheet_order(candidates, index, None)
    by_id = candidates.set_index("candidate_id")["bad_fraction"]
    assert list(ranked["bad_fraction"]) == list(by_id.loc[ranked["candidate_id"]])
    assert (bad_label(0.123), bad_label(0.001)) == ("bad 12%", "bad <1%")
    columns = ("candidate_id", "colour_png", "bad_fraction")
    entries = [
        (rank, cid, 0.9, png, bad)
        for rank, (cid, png, bad) in enumerate(ranked[list(columns)].itertuples(index=False), 1)
    ]
    sheet = draw_sheet(entries, tmp_path, stamps=review_data.stamps, columns=4, rows=3, label="p")
    assert (tmp_path / "sheet_00001.png").is_file() and sheet.endswith("sheet_00001.png")


@pytest.mark.slow
def test_rerun_skips_complete_tiles_and_redoes_changed_ones(review_data, tmp_path, client):
    stamps = tmp_path / "stamps"
    shutil.copytree(review_data.stamps, stamps)
    before = {
        path: path.stat().st_mtime_ns for path in stamps.rglob("*.png") if "sheets" not in str(path)
    }
    config = StampConfig(sheet_columns=2, sheet_rows=2)
    report = make_stamps(
        review_data.candidates_path,
        review_data.cutouts,
        stamps,
        config=config,
        client=client,
        progress=False,
    )
    assert report.written == 0 and report.skipped == 3 and report.stamps == N_CANDIDATES
    assert [path.name for path in report.sheets] == [
        f"sheet_{k:05d}.png" for k in (1, 5, 9)
    ]  # 4 per sheet; the old single sheet is gone
    assert sorted(p.name for p in (stamps / "sheets").glob("*.png")) == [
        p.name for p in report.sheets
    ]
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in before.items())
    # one candidate fewer in one tile: only that tile is redone
    fewer = review_data.candidates.iloc[1:]
    fewer_path = tmp_path / "fewer.parquet"
    fewer.to_parquet(fewer_path, index=False)
    report = make_stamps(fewer_path, review_data.cutouts, stamps, client=client, progress=False)
    assert list(report.units.results) == [review_data.candidates["THELI_NAME"].iloc[0]]
    assert report.skipped == 2 and report.stamps == N_CANDIDATES - 1


@pytest.mark.slow
def test_sheets_follow_a_ranking_table(review_data, tmp_path, client):
    stamps = tmp_path / "stamps"
    shutil.copytree(review_data.stamps, stamps)
    ids = review_data.candidates["ID"].tolist()
    ranking = pd.DataFrame(
        {
            "candidate_id": [ids[5], ids[0]],
            "p_cnn": [0.9, 0.99],
            "s_ave": [10.0, 7.0],
            "s_rms": [0.0, 0.0],
            "p_hum": [1.0, 0.7],
            "p_value": [0.9, 0.693],
            "n_zero": [0, 0],
            "quality": ["golden", "high"],
        }
    )
    write_ranking(ranking, tmp_path / "ranking.csv")
    ranked, label = sheet_order(
        review_data.candidates.rename(columns={"ID": "candidate_id"}),
        read_stamp_index(stamps),
        tmp_path / "ranking.csv",
    )
    assert label == "P" and list(ranked["candidate_id"]) == [ids[5], ids[0]]
    report = make_stamps(
        review_data.candidates_path,
        review_data.cutouts,
        stamps,
        ranking=tmp_path / "ranking.csv",
        client=client,
        progress=False,
    )
    assert [path.name for path in report.sheets] == ["ranked_sheet_00001.png"]
    with Image.open(report.sheets[0]) as sheet:
        assert sheet.size[0] > 600
    # the p_CNN sheet of all candidates is still there, untouched by the ranked ones
    p_cnn_sheet = stamps / "sheets" / "sheet_00001.png"
    assert p_cnn_sheet.read_bytes() == (review_data.stamps / "sheets/sheet_00001.png").read_bytes()
    # a p_CNN run in small sheets leaves the ranked sheet as it was
    ranked_bytes = report.sheets[0].read_bytes()
    again = make_stamps(
        review_data.candidates_path,
        review_data.cutouts,
        stamps,
        config=StampConfig(sheet_columns=2, sheet_rows=2),
        client=client,
        progress=False,
    )
    assert [path.name for path in again.sheets] == [f"sheet_{k:05d}.png" for k in (1, 5, 9)]
    assert sorted(path.name for path in (stamps / "sheets").glob("*.png")) == [
        "ranked_sheet_00001.png",
        *(path.name for path in again.sheets),
    ]
    assert report.sheets[0].read_bytes() == ranked_bytes


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_sheet_labels_lie_inside_the_figure_whatever_its_rows(review_data, rows):
    """A sheet of one row used to clip its top labels (margins were fractions of the
    sheet's height); every label's drawn extent must lie inside the figure."""
    index = read_stamp_index(review_data.stamps)
    entries = [
        (rank, cid, 0.987, png)
        for rank, (cid, png) in enumerate(
            index[["candidate_id", "colour_png"]].itertuples(index=False), 1
        )
    ][: rows * 2]
    fig = sheet_figure(entries, stamps=review_data.stamps, columns=2, rows=5, label="p_CNN")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    box = fig.bbox
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert len(titles) == len(entries)
    for title in titles:
        extent = title.get_window_extent(renderer)
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, (rows, extent, box)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, (rows, extent, box)
    # and the stamps keep their size: a sheet's height grows with its rows only
    assert fig.get_figheight() == pytest.approx(rows * (1.93 + 0.32) + 0.03)


@pytest.mark.slow
def test_a_candidate_without_a_cutout_fails_its_tile_only(review_data, tmp_path, client):
    frame = review_data.candidates.copy()
    tile = frame["THELI_NAME"].iloc[0]
    frame.loc[0, "ID"] = "KiDS J000000.000+000000.00"
    path = tmp_path / "candidates.parquet"
    frame.to_parquet(path, index=False)
    report = make_stamps(
        path, review_data.cutouts, tmp_path / "stamps", client=client, progress=False
    )
    assert [failure.unit for failure in report.units.failures] == [tile]
    assert "KiDS J000000.000+000000.00" in report.units.failures[0].error
    assert report.written == 2
    with (tmp_path / "stamps" / FAILURES_FILE).open() as handle:
        assert [row["unit"] for row in csv.DictReader(handle)] == [tile]
