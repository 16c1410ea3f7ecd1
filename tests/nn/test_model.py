"""The ResNet-18 classifier: layer structure, parameter count, saving, a second backend."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from lensdask.nn.model import architecture, build_resnet18

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings(
    # Keras' TensorFlow backend calls np.array(tensor) the NumPy 1 way; not this code's doing.
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

NARROW = 0.125
"""Width of the test networks: 8..64 filters, fast to build and run."""


def images(n: int, *, shape: tuple[int, int, int] = (101, 101, 1), seed: int = 0) -> np.ndarray:
    """``n`` random float32 images with values in [0, 255], as the cutouts arrive."""
    return np.random.default_rng(seed).uniform(0, 255, (n, *shape)).astype(np.float32)


def conv_filters(model) -> dict[str, int]:
    return {
        layer.name: layer.filters
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    }


def test_importing_the_module_imports_no_framework():
    code = (
        "import sys, lensdask.nn, lensdask.nn.model; "
        "print([m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def narrow():
    keras.utils.set_random_seed(5)
    return build_resnet18(width=NARROW)


def test_layers_shapes_and_output(narrow):
    convs = conv_filters(narrow)
    assert len(convs) == 20  # stem + 8 blocks x 2 + 3 projection shortcuts
    assert sorted(n for n in convs if "shortcut" in n) == [
        "stage2_block1_shortcut",
        "stage3_block1_shortcut",
        "stage4_block1_shortcut",
    ]
    assert isinstance(narrow.layers[1], keras.layers.Rescaling)
    assert narrow.layers[1].scale == pytest.approx(1 / 255)
    assert narrow.input_shape == (None, 101, 101, 1)
    assert narrow.output_shape == (None, 1)
    out = narrow.predict(images(3), verbose=0)
    assert out.shape == (3, 1)
    assert out.dtype == np.float32
    assert np.all((out > 0) & (out < 1))


def test_parameter_count_matches_hand_computation():
    def conv(k: int, cin: int, cout: int) -> int:
        return k * k * cin * cout  # no bias: batch normalisation follows

    def bn(c: int) -> int:
        return 4 * c  # gamma, beta (trainable); moving mean, moving variance (not)

    expected = conv(7, 1, 64) + bn(64)
    bn_channels = 64
    cin = 64
    for cout in (64, 128, 256, 512):
        expected += conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout)
        expected += 2 * (conv(3, cout, cout) + bn(cout))
        bn_channels += 4 * cout
        if cin != cout:
            expected += conv(1, cin, cout) + bn(cout)
            bn_channels += cout
        cin = cout
    expected += 512 * 1 + 1  # Dense(1): weights and bias

    model = build_resnet18()
    assert model.count_params() == expected == 11_180_353
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    assert trainable == expected - 2 * bn_channels
    # torchvision's resnet18 (3 channels in, 1000 classes, BN statistics not counted):
    # 11,689,512 parameters; one channel in saves 7*7*2*64, one output saves 512*999+999.
    assert trainable == 11_689_512 - 7 * 7 * 2 * 64 - (512 * 999 + 999)
    card = architecture(model)
    assert card["params"] == {
        "total": expected,
        "trainable": trainable,
        "non_trainable": 2 * bn_channels,
    }


def test_width_scales_every_convolution():
    model = build_resnet18(width=0.25, input_shape=(64, 48, 1))
    convs = conv_filters(model)
    assert convs["conv1"] == 16
    for stage, filters in zip((1, 2, 3, 4), (16, 32, 64, 128), strict=True):
        stage_convs = {n: f for n, f in convs.items() if n.startswith(f"stage{stage}_")}
        assert len(stage_convs) == (4 if stage == 1 else 5)
        assert set(stage_convs.values()) == {filters}
    assert model.get_layer("p_cnn").kernel.shape == (128, 1)
    assert model.output_shape == (None, 1)


def test_architecture_is_json_and_describes_the_net(narrow):
    card = json.loads(json.dumps(architecture(narrow)))
    assert card["family"] == "ResNet-18"
    assert card["name"] == "resnet18"
    assert card["input_shape"] == [101, 101, 1]
    assert card["input_scale"] == pytest.approx(1 / 255)
    assert card["width"] == NARROW
    assert card["filters"] == {"stem": 8, "stages": [8, 16, 32, 64]}
    assert card["blocks"] == [2, 2, 2, 2]
    assert card["conv_layers"] == 20
    assert card["output"] == "p_cnn"
    assert card["params"]["total"] == narrow.count_params()


def test_architecture_rejects_other_models():
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="other")
    with pytest.raises(ValueError, match="'other' was not built by build_resnet18"):
        architecture(other)


@pytest.mark.parametrize("width", [0, -0.5, float("nan"), float("inf")])
def test_bad_width_is_rejected(width):
    with pytest.raises(ValueError, match="width"):
        build_resnet18(width=width)


@pytest.mark.parametrize(
    "input_shape", [(101, 101), (101, 101, 1, 1), (101, 0, 1), (-1, 101, 1), (101.5, 101, 1)]
)
def test_bad_input_shape_is_rejected(input_shape):
    with pytest.raises(ValueError, match="input_shape"):
        build_resnet18(input_shape=input_shape)


def test_output_is_float32_under_mixed_precision():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_resnet18(width=NARROW)
    finally:
        keras.config.set_dtype_policy(policy)
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("p_cnn").compute_dtype == "float32"
    assert model.predict(images(2), verbose=0).dtype == np.float32


def test_saved_model_reloads_in_safe_mode_with_identical_predictions(narrow, tmp_path):
    path = tmp_path / "model.keras"
    narrow.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = images(4, seed=1)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), narrow.predict(x, verbose=0))
    assert architecture(loaded) == architecture(narrow)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs jax")
def test_builds_and_predicts_on_the_jax_backend():
    code = (
        "import json, sys, numpy as np, keras\n"
        "from lensdask.nn.model import build_resnet18\n"
        # seeded: an unseeded random network can saturate its sigmoid to exactly 1.0
        f"model = build_resnet18(width={NARROW}, input_shape=(101, 101, 1), seed=1)\n"
        "x = np.random.default_rng(0).uniform(0, 255, (3, 101, 101, 1)).astype('float32')\n"
        "out = np.asarray(model.predict(x, verbose=0))\n"
        "print(json.dumps({'backend': keras.backend.backend(), 'shape': list(out.shape),\n"
        "    'in_range': bool(np.all((out > 0) & (out < 1))),\n"
        "    'tensorflow': 'tensorflow' in sys.modules}))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"backend": "jax", "shape": [3, 1], "in_range": True, "tensorflow": False}
