"""The model directory: writing it, and refusing missing, damaged or misfitting models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lensdask.formats.model_dir import ModelError, file_hash, load_model, read_card, write_model_dir

keras = pytest.importorskip("keras")


def edit_card(model_dir, **changes) -> None:
    path = model_dir / "card.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_write_model_dir_then_load_model_round_trip(tmp_path):
    from lensdask.nn.model import build_resnet18

    model = build_resnet18(input_shape=(33, 33, 1), width=0.0625)
    model_id = write_model_dir(model, tmp_path / "m", card={"input_shape": [33, 33, 1]})
    assert model_id == file_hash(tmp_path / "m" / "model.keras") and len(model_id) == 16
    assert read_card(tmp_path / "m") == {"input_shape": [33, 33, 1], "model_id": model_id}
    loaded, card = load_model(tmp_path / "m", input_shape=(33, 33, 1))
    assert card["model_id"] == model_id
    images = np.random.default_rng(0).uniform(0, 255, (3, 33, 33, 1)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_on_batch(images), model.predict_on_batch(images))
    assert not list((tmp_path / "m").glob("*.tmp*"))


def test_the_trained_model_loads_with_its_card(trained):
    model, card = load_model(trained.out, input_shape=(101, 101, 1))
    assert card == trained.card
    assert tuple(model.input_shape) == (None, 101, 101, 1)


@pytest.mark.parametrize("missing", ["card.json", "model.keras"])
def test_a_missing_file_is_named(model_copy, missing):
    (model_copy / missing).unlink()
    with pytest.raises(ModelError) as err:
        load_model(model_copy)
    assert str(model_copy) in str(err.value)
    assert f"{missing} is missing" in str(err.value)


def test_a_changed_model_file_fails_its_hash(model_copy):
    data = bytearray((model_copy / "model.keras").read_bytes())
    data[-100] ^= 0x01
    (model_copy / "model.keras").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"hash does not match card\.json's model_id") as err:
        load_model(model_copy)
    assert str(model_copy / "model.keras") in str(err.value)


def test_a_model_file_that_is_no_keras_model_cannot_be_loaded(model_copy):
    (model_copy / "model.keras").write_bytes(b"PK\x03\x04 not a zip archive at all")
    edit_card(model_copy, model_id=file_hash(model_copy / "model.keras"))
    with pytest.raises(ModelError, match="cannot be loaded as a Keras model"):
        load_model(model_copy)


def test_a_damaged_card_is_named(model_copy):
    (model_copy / "card.json").write_text('{"model_id": ')
    with pytest.raises(ModelError, match=r"card\.json: damaged card"):
        load_model(model_copy)


def test_a_model_for_other_images_is_refused_naming_both_shapes(model_copy):
    with pytest.raises(ModelError) as err:
        load_model(model_copy, input_shape=(64, 64, 1))
    message = str(err.value)
    assert "(101, 101, 1)" in message and "(64, 64, 1)" in message


def test_a_card_that_disagrees_with_its_model_is_refused(model_copy):
    edit_card(model_copy, input_shape=[64, 64, 1])
    with pytest.raises(ModelError, match=r"input shape \(101, 101, 1\) differs from its card"):
        load_model(model_copy)
