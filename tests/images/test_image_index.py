"""The image index: templates, manifests and header scans give the same index; presets,
renamed files, HDUs, compression, errors and resumption."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from image_files import KIDS_TILES, OMEGACAM, write_image, write_kids_tiles

from lensdask.config import ConfigError, ImageIndexConfig
from lensdask.formats.image_index import (
    INDEX_COLUMNS,
    ImageIndexError,
    image_refs,
    image_wcs,
    read_image_index,
    write_image_index,
)
from lensdask.images.headers import read_image_header
from lensdask.images.index import index_images, run
from lensdask.images.templates import TemplateError, match_templates
from lensdask.stages import StageIO
from lensdask.units import marker_path

KIDS = ImageIndexConfig(preset="kids-dr4")
HEADERS = ImageIndexConfig(preset="kids-dr4-headers")


def frame(index: pd.DataFrame) -> pd.DataFrame:
    return index.reset_index(drop=True)


def write_manifest(path: Path, folder: Path, *, maps: bool) -> Path:
    rows = []
    for file in sorted(folder.glob("*_sci.fits*")):
        tile = "KIDS_" + file.name.split("_")[2] + "_" + file.name.split("_")[3]
        band = file.name.split("_")[4]
        row = {"path": file.name, "band": band, "tile": tile}
        if maps:
            row["weight_path"] = file.name.replace("_sci.", "_wei.")
            row["flag_path"] = str(folder / file.name.replace("_sci.", "_msk."))  # absolute
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_templates_manifests_and_header_scans_give_the_same_index(tmp_path, client):
    folder = tmp_path / "images"
    write_kids_tiles(folder, maps=False, compressed=("KIDS_130.0_0.5",))
    by_template = index_images(folder, tmp_path / "t", config=KIDS, client=client, progress=False)
    manifest = write_manifest(folder / "images.csv", folder, maps=False)
    by_manifest = index_images(
        None,
        tmp_path / "m",
        config=ImageIndexConfig(manifest=manifest),
        client=client,
        progress=False,
    )
    by_headers = index_images(folder, tmp_path / "h", config=HEADERS, client=client, progress=False)
    assert (by_template.method, by_manifest.method, by_headers.method) == (
        "template",
        "manifest",
        "headers",
    )
    expected = frame(by_template.index)
    assert len(expected) == 4 and list(expected.columns) == list(INDEX_COLUMNS)
    pd.testing.assert_frame_equal(frame(by_manifest.index), expected)
    pd.testing.assert_frame_equal(frame(by_headers.index), expected)
    pd.testing.assert_frame_equal(read_image_index(tmp_path / "h"), expected)


def test_weight_and_flag_maps_by_template_and_by_manifest(tmp_path, client, kids_folder):
    folder, _ = kids_folder
    by_template = index_images(folder, tmp_path / "t", config=KIDS, client=client, progress=False)
    manifest = write_manifest(tmp_path / "images.csv", folder, maps=True)
    manifest = shutil.copy(manifest, folder / "m.csv")
    by_manifest = index_images(
        None,
        tmp_path / "m",
        config=ImageIndexConfig(manifest=Path(manifest)),
        client=client,
        progress=False,
    )
    pd.testing.assert_frame_equal(frame(by_manifest.index), frame(by_template.index))
    # the scan of the same folder leaves the maps out by their PRODCATG
    by_headers = index_images(folder, tmp_path / "h", config=HEADERS, client=client, progress=False)
    assert len(by_headers.ancillary) == 8
    maps = ["weight_path", "weight_hdu", "flag_path", "flag_hdu"]
    assert by_headers.index[maps].isna().all().all()
    pd.testing.assert_frame_equal(
        frame(by_headers.index.drop(columns=maps)), frame(by_template.index.drop(columns=maps))
    )


def test_kids_dr4_preset_finds_sci_wei_and_msk_for_the_catalog_tile(tmp_path, client, kids_folder):
    folder, _ = kids_folder
    report = index_images(folder, tmp_path / "index", config=KIDS, client=client, progress=False)
    assert report.images == 4 and report.tiles == 2 and not report.unreadable
    refs = image_refs(report.index, "KIDS_129.0_-0.5", ["r", "g", "i"])
    assert sorted(refs) == ["g", "r"]  # no i-band image: left for the caller to judge
    r = refs["r"]
    assert r.path == folder / "KiDS_DR4.0_129.0_-0.5_r_sci.fits"
    assert r.weight_path == folder / "KiDS_DR4.0_129.0_-0.5_r_wei.fits"
    assert r.flag_path == folder / "KiDS_DR4.0_129.0_-0.5_r_msk.fits"
    assert (r.hdu, r.weight_hdu, r.flag_hdu, r.compression) == (0, 0, 0, "none")
    fz = image_refs(report.index, "KIDS_130.0_0.5", ["r"])["r"]
    assert fz.path.name == "KiDS_DR4.0_130.0_0.5_r_sci.fits.fz"
    assert fz.weight_path.name == "KiDS_DR4.0_130.0_0.5_r_wei.fits.fz"
    assert (fz.hdu, fz.weight_hdu, fz.compression) == (1, 1, "RICE_1")
    row = report.index.iloc[0]
    assert row["pixel_scale"] == pytest.approx(0.2)
    assert row["seeing"] == pytest.approx(0.7)
    assert (row["width"], row["height"]) == (40, 30)
    wcs = image_wcs(row["wcs"])
    ra, dec = KIDS_TILES[row["tile"]]
    centre = wcs.pixel_to_world_values(19.5, 14.5)
    assert centre == pytest.approx((ra, dec))
    assert min(row["dec_corners"]) == pytest.approx(dec - 15 * 0.2 / 3600, abs=1e-7)


def test_renamed_adp_files_are_recognised_by_their_headers(tmp_path, client):
    folder = tmp_path / "eso"
    for k, filt in enumerate(OMEGACAM.values()):
        write_image(
            folder / f"ADP.2019-02-11T13:02:2{k}.123.fits",
            ra=129.0,
            dec=-0.5,
            keywords={"FILTER": filt, "OBJECT": "KIDS_129.0_-0.5"},
        )
        write_image(
            folder / f"ADP.2019-02-11T13:03:2{k}.456.fits",
            ra=129.0,
            dec=-0.5,
            keywords={
                "FILTER": filt,
                "OBJECT": "KIDS_129.0_-0.5",
                "PRODCATG": "ANCILLARY.WEIGHTMAP",
            },
        )
    write_image(
        folder / "ADP.2020-01-01T00:00:00.000.fits", ra=10.0, dec=5.0, keywords={"FILTER": "i_SDSS"}
    )
    report = index_images(
        str(folder / "ADP.*.fits"),
        tmp_path / "index",
        config=HEADERS,
        client=client,
        progress=False,
    )
    index = report.index
    assert list(zip(index["tile"], index["band"], strict=True)) == [
        ("ADP.2020-01-01T00:00:00.000", "i"),  # no OBJECT: the image's own key
        ("KIDS_129.0_-0.5", "g"),
        ("KIDS_129.0_-0.5", "r"),
    ]
    assert len(report.ancillary) == 2
    assert all(Path(path).name.startswith("ADP.2019-02-11T13:03") for path in report.ancillary)


def test_the_image_hdu_is_found_in_compressed_and_multi_extension_files(tmp_path, client):
    fz = write_image(
        tmp_path / "a.fits.fz", ra=1.0, dec=2.0, compression="GZIP_2", keywords={"FILTER": "r"}
    )
    mef = write_image(
        tmp_path / "b.fits", ra=1.0, dec=2.0, layout="extension", keywords={"FILTER": "r"}
    )
    plain = write_image(tmp_path / "c.fits", ra=1.0, dec=2.0, keywords={"FILTER": "r"})
    assert (read_image_header(fz).hdu, read_image_header(fz).compression) == (1, "GZIP_2")
    assert (read_image_header(mef).hdu, read_image_header(mef).compression) == (2, "none")
    assert read_image_header(plain).hdu == 0
    with pytest.raises(OSError, match=r"b\.fits \(HDU 1\): not a 2-D image"):
        read_image_header(mef, hdu=1)
    report = index_images(tmp_path, tmp_path / "index", client=client, progress=False)
    assert dict(
        zip(report.index["path"].map(lambda p: Path(p).name), report.index["hdu"], strict=True)
    ) == {
        "a.fits.fz": 1,
        "b.fits": 2,
        "c.fits": 0,
    }
    # a given HDU is used as it is: a file where it is not an image is listed, not dropped
    again = index_images(
        tmp_path, tmp_path / "index2", config=ImageIndexConfig(hdu=2), client=client, progress=False
    )
    assert list(again.index["path"].map(lambda p: Path(p).name)) == ["b.fits"]
    assert sorted(Path(p).name for p in again.unreadable) == ["a.fits.fz", "c.fits"]
    assert "has no HDU 2" in again.unreadable[str(tmp_path / "c.fits")]


def test_headers_only_no_pixel_is_read(tmp_path):
    path = write_image(tmp_path / "big.fits", ra=1.0, dec=2.0, width=400, height=300)
    size = path.stat().st_size
    with open(path, "r+b") as handle:  # the pixels are cut off: only the header is left
        handle.truncate(2880)
    assert size > 2880 * 10
    with pytest.warns(UserWarning, match="truncated"):  # astropy notices, reads no pixel
        header = read_image_header(path)
    assert header.shape == (400, 300)


def test_a_template_that_matches_nothing_shows_it_and_an_example(tmp_path, client, kids_folder):
    folder, _ = kids_folder
    config = ImageIndexConfig(template="KIDS_{ra}_{dec}_{band}.fits")
    with pytest.raises(TemplateError) as err:
        index_images(folder, tmp_path / "index", config=config, client=client, progress=False)
    message = str(err.value)
    assert "'KIDS_{ra}_{dec}_{band}.fits'" in message
    assert "e.g. 'KiDS_DR4.0_129.0_-0.5_g_msk.fits' exists" in message
    assert not (tmp_path / "index").exists()


def test_simple_layout_and_siblings_are_one_mechanism():
    names = ["KIDS_1.0_2.0_r.fits", "KIDS_1.0_2.0_r_wei.fits", "KIDS_1.0_2.0_g.fits", "notes.txt"]
    matches = match_templates(names, template="{tile}_{band}.fits")
    # without a weight template, the weight map is taken for band "wei" of tile KIDS_1.0_2.0_r
    assert [(m.tile, m.band) for m in matches] == [
        ("KIDS_1.0_2.0", "g"),
        ("KIDS_1.0_2.0", "r"),
        ("KIDS_1.0_2.0_r", "wei"),
    ]
    matches = match_templates(
        names, template="{tile}_{band}.fits", weight_template="{tile}_{band}_wei.fits"
    )
    assert [(m.tile, m.band, m.weight) for m in matches] == [
        ("KIDS_1.0_2.0", "g", None),
        ("KIDS_1.0_2.0", "r", "KIDS_1.0_2.0_r_wei.fits"),
    ]
    folders = match_templates(["r/T1.fits", "g/T1.fits.fz"], template="{band}/{tile}.fits[.fz]")
    assert [(m.tile, m.band) for m in folders] == [("T1", "g"), ("T1", "r")]
    with pytest.raises(TemplateError, match="not in the image template"):
        match_templates(names, template="{tile}_{band}.fits", tile_template="KIDS_{ra}")


def test_a_resumed_header_scan_redoes_only_the_missing_batch(tmp_path, client):
    folder = tmp_path / "images"
    for k in range(5):
        write_image(folder / f"img{k}.fits", ra=10.0 + k, dec=0.0, keywords={"FILTER": "r"})
    config = ImageIndexConfig(batch_size=2)
    out = tmp_path / "index"
    first = index_images(folder, out, config=config, client=client, progress=False)
    assert sorted(first.units.results) == ["batch-00000", "batch-00001", "batch-00002"]
    marker_path(out, "batch-00001").unlink()
    again = index_images(folder, out, config=config, client=client, progress=False)
    assert list(again.units.results) == ["batch-00001"]
    assert sorted(again.units.skipped) == ["batch-00000", "batch-00002"]
    pd.testing.assert_frame_equal(again.index, first.index)
    # a changed file remakes its batch only
    write_image(folder / "img4.fits", ra=30.0, dec=0.0, keywords={"FILTER": "r"})
    third = index_images(folder, out, config=config, client=client, progress=False)
    assert list(third.units.results) == ["batch-00002"]
    assert third.index["ra_corners"].iloc[-1][0] > 29


def test_manifest_errors_name_the_file_the_column_and_the_row(tmp_path, client):
    write_image(tmp_path / "a.fits", ra=1.0, dec=2.0)
    manifest = tmp_path / "images.csv"
    manifest.write_text("path,band,hdu\na.fits,r,x\nb.fits,,\n")
    with pytest.raises(ImageIndexError) as err:
        index_images(
            None, tmp_path / "i", config=ImageIndexConfig(manifest=manifest), client=client
        )
    message = str(err.value)
    assert str(manifest) in message
    assert "row 1: column hdu: not an HDU number: 'x'" in message
    assert "row 2: column band is empty" in message
    assert f"row 2: column path: no such file {tmp_path / 'b.fits'}" in message
    manifest.write_text("path,band,weight\na.fits,r,w.fits\n")
    with pytest.raises(ImageIndexError, match=r"unknown column\(s\) weight"):
        index_images(
            None, tmp_path / "i", config=ImageIndexConfig(manifest=manifest), client=client
        )


def test_two_images_of_one_tile_and_band_are_named(tmp_path, client):
    folder = tmp_path / "images"
    write_image(folder / "T1_r_sci.fits", ra=1.0, dec=2.0)
    write_image(folder / "T1_r_sci.fits.fz", ra=1.0, dec=2.0, compression="RICE_1")
    config = ImageIndexConfig(template="{tile}_{band}_sci.fits[.fz]")
    with pytest.raises(
        ImageIndexError,
        match=r"more than one image of tile T1 band r: .*T1_r_sci\.fits, .*T1_r_sci\.fits\.fz",
    ):
        index_images(folder, tmp_path / "index", config=config, client=client, progress=False)


def test_written_index_is_checked_and_read_back(tmp_path, client, kids_folder):
    folder, _ = kids_folder
    report = index_images(folder, tmp_path / "index", config=KIDS, client=client, progress=False)
    path = write_image_index(report.index, tmp_path / "copy.parquet")
    pd.testing.assert_frame_equal(read_image_index(path), report.index)
    bad = report.index.copy()
    bad.loc[1, "width"] = 0
    bad.loc[2, "compression"] = "LZW"
    with pytest.raises(ImageIndexError) as err:
        write_image_index(bad, tmp_path / "bad.parquet")
    message = str(err.value)
    assert (
        f"{tmp_path / 'bad.parquet'}: column width must be > 0 px for {bad.loc[1, 'path']}"
        in message
    )
    assert "column compression must be one of" in message
    bad.drop(columns=["wcs"]).to_parquet(tmp_path / "nowcs.parquet")
    with pytest.raises(ImageIndexError, match=r"nowcs\.parquet: missing column\(s\) wcs"):
        read_image_index(tmp_path / "nowcs.parquet")


def test_config_validation():
    assert (
        ImageIndexConfig(preset="kids-dr4").template == "KiDS_DR4.0_{ra}_{dec}_{band}_sci.fits[.fz]"
    )
    assert ImageIndexConfig(preset="kids-dr4", band_map={"R": "r"}).band_map["R"] == "r"
    with pytest.raises(ConfigError, match=r"index_images\.preset: one of"):
        ImageIndexConfig(preset="hsc")
    with pytest.raises(ConfigError, match="manifest or a template, not both"):
        ImageIndexConfig(template="{tile}_{band}.fits", manifest=Path("m.csv"))
    with pytest.raises(
        ConfigError, match=r"index_images\.weight_template: field\(s\) ra are not in"
    ):
        ImageIndexConfig(template="{tile}_{band}.fits", weight_template="{ra}_wei.fits")
    with pytest.raises(ConfigError, match=r"needs index_images\.template"):
        ImageIndexConfig(tile_template="KIDS_{ra}_{dec}")
    with pytest.raises(ConfigError, match="unbalanced brace"):
        ImageIndexConfig(template="{tile_{band}.fits")
    with pytest.raises(ConfigError, match="batch_size"):
        ImageIndexConfig(batch_size=0)


def test_run_function_reads_the_images_artifact(tmp_path, client, kids_folder):
    folder, _ = kids_folder
    io = StageIO("index-images", {"images": folder, "image_index": tmp_path / "images.parquet"})
    outcome = run(KIDS, io, client=client, progress=False)
    assert outcome.counts == {"images indexed": 4, "image tiles": 2}
    assert outcome.outputs == {"image index": tmp_path / "images.parquet"}
    assert not outcome.problems and outcome.reports[0].ok
    assert "4 images of 2 tiles (g: 2, r: 2)" in outcome.lines[0]


def test_two_images_found_by_their_headers_for_one_tile_and_band_are_named(tmp_path, client):
    folder = tmp_path / "images"
    for name in ("x.fits", "y.fits"):
        write_image(folder / name, ra=1.0, dec=2.0, keywords={"FILTER": "r", "OBJECT": "T1"})
    with pytest.raises(ImageIndexError, match=r"more than one image of tile T1 band r: .*x\.fits"):
        index_images(folder, tmp_path / "index", client=client, progress=False)
    assert (tmp_path / "index" / "_manifest.json").exists()  # the batches are kept
