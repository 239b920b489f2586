"""deepshap.accelerated: the JAX engine against the CPU engine (deepshap.Explainer) on every model the params offer.

Both engines run in float32 here (JAX's default; no x64). The models' weights lie on a grid where
float32 sums are exact, so both forward passes give the same logits bit for bit: shap's softmax
rule divides by each logit's change, and where a logit barely moves, the last bit of a rounded
forward pass (TensorFlow's and XLA's differ by ~3e-7 of a logit) would otherwise decide the values.
"""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

from deepshap import Explainer
from deepshap.accelerated import (
    AcceleratedExplainer,
    UnsupportedModelError,
    layers_from_keras,
    layers_from_weights_file,
)
from fashion_shap.model import build_model, save_weights

# XLA's CPU compiler at its lowest optimization level, read when JAX starts its backend (at the first
# computation): the tests' arrays are tiny and compiling is most of their time (measured: the file's
# CPU time 30 s -> 24 s).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

LAB = {"conv_filters": [32], "kernel_size": 3, "pool_size": 2, "padding": "valid", "dense_units": [256],
       "dropout": 0.0, "batch_norm": False}
STACKS = {
    "lab": {},
    "two conv blocks": {"conv_filters": [4, 6], "dense_units": [16]},
    "padding same": {"conv_filters": [4, 6], "padding": "same", "dense_units": [16]},
    "pool 3, kernel 5": {"conv_filters": [4], "kernel_size": 5, "pool_size": 3, "dense_units": [16]},
    "batch norm": {"conv_filters": [4, 6], "batch_norm": True, "dense_units": [16]},
    "dropout": {"conv_filters": [4], "dense_units": [16], "dropout": 0.5},
    "two dense layers": {"conv_filters": [4], "dense_units": [16, 12]},
}
PIXEL_STEP = 1 / 16  # pixels are multiples of it, in [0, 1]


def on_grid(model: keras.Model, seed: int) -> keras.Model:
    """Give the model weights on which float32 sums are exact, in any order.

    Each kernel entry is -1, 0 or 1 times a power of two near 2 / sqrt(fan in), so that the logits
    spread over a few units, as a trained model's do; each bias a quarter of that times -2..2. Every
    value is then a multiple of PIXEL_STEP times the steps so far, and small enough to hold it in
    float32's 24 bits. Batch norm's moving variance is 4 - epsilon, which float32 rounds to 4: its
    scale is gamma / 2 exactly. test_grid_weights_give_both_engines_the_same_logits checks the promise.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.gamma.shape
            layer.set_weights([rng.choice([1.0, 2.0], channels), rng.integers(-2, 3, channels) / 8,
                               rng.integers(-2, 3, channels) / 8, np.full(channels, 4.0 - layer.epsilon)])
        elif layer.get_weights():
            kernel, bias = layer.get_weights()
            step = 2.0 ** (1 - round(math.log2(math.sqrt(np.prod(kernel.shape[:-1])))))
            layer.set_weights([rng.integers(-1, 2, kernel.shape) * step, rng.integers(-2, 3, bias.shape) * step / 4])
    return model


def grid_images(count: int, seed: int) -> np.ndarray:
    """Return images (count, 28, 28, 1) float32: dim noise, a bright band at a random row (what sets
    images apart, as a class does in tests/conftest.py's data) and a blank border, as Fashion-MNIST
    has: flat regions tie in max-pool."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 5, (count, 28, 28, 1)) * PIXEL_STEP
    for image, row in zip(images, rng.integers(3, 24, count), strict=True):
        image[row : row + 3, 4:24] = 1.0
    images[:, :3] = 0.0
    images[:, :, -2:] = 0.0
    return images.astype(np.float32)


def stack(name: str, seed: int = 0) -> keras.Model:
    return on_grid(build_model(**{**LAB, **STACKS[name]}), seed)


def assert_close(values: np.ndarray, expected: np.ndarray) -> None:
    largest = np.abs(expected).max()
    assert largest > 1e-3  # the comparison is not between zeros
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-5 * largest)


# Every stack with shap's rule (the most sensitive head), and the two other heads on the lab's model: the
# layers' rules do not depend on the head's.
CASES = [(name, "probability", "shap") for name in STACKS] + [("lab", "probability", "shapley"),
                                                              ("lab", "logit", "shap")]


@pytest.mark.parametrize("name, output, rule", CASES)
def test_values_equal_the_cpu_engine(name, output, rule):
    model = stack(name)
    images, background = grid_images(3, 1), grid_images(8, 2)
    expected = Explainer(model, output=output, softmax_rule=rule, chunk_size=8)
    accelerated = AcceleratedExplainer(layers_from_keras(model), output=output, softmax_rule=rule)  # chunks to fit
    values = accelerated.shap_values(images, background)
    assert values.shape == (3, 28, 28, 1, 10) and values.dtype == np.float32
    assert_close(values, expected.shap_values(images, background))


def test_chosen_classes_and_chunks_give_the_cpu_engines_values():
    model = stack("two conv blocks", seed=3)
    images, background = grid_images(3, 4), grid_images(7, 5)
    classes = np.array([[2, 0], [9, 9], [5, 1]])
    expected = Explainer(model, chunk_size=7).shap_values(images, background, classes)
    done = []
    accelerated = AcceleratedExplainer(layers_from_keras(model), chunk_size=3)  # the last chunk padded
    values = accelerated.shap_values(images, background, classes, progress=done.append)
    assert values.shape == (3, 28, 28, 1, 2)
    assert_close(values, expected)
    assert done == [3, 3, 1]


def test_models_that_differ_in_their_weights_share_the_compiled_passes_and_keep_their_own_values():
    """As the trust stage's randomized models do: jax compiles each input shape once for all of them."""
    images, background = grid_images(2, 6), grid_images(5, 7)
    trained, randomized = (stack("two conv blocks", seed=seed) for seed in (8, 9))
    first, second = (AcceleratedExplainer(layers_from_keras(model)) for model in (trained, randomized))
    assert (first.logits, first.chunk) == (second.logits, second.chunk)  # the same compiled functions
    for model, explainer in ((trained, first), (randomized, second)):
        expected = Explainer(model, chunk_size=5).shap_values(images, background)
        assert_close(explainer.shap_values(images, background), expected)
    assert AcceleratedExplainer(layers_from_keras(stack("two dense layers"))).chunk is not first.chunk


@pytest.mark.parametrize("name", ["lab", "batch norm"])
def test_grid_weights_give_both_engines_the_same_logits(name):
    model, images = stack(name), grid_images(8, 2)
    logits = AcceleratedExplainer(layers_from_keras(model), output="logit").predict(images)
    assert logits.tobytes() == Explainer(model, output="logit").predict(images).tobytes()


@pytest.mark.parametrize("output, rule", [("probability", "shap"), ("probability", "shapley"), ("logit", "shap")])
def test_head_multipliers_predictions_and_expected_value_equal_the_cpu_engines(output, rule):
    model = stack("lab", seed=6)
    images, references = grid_images(2, 7), grid_images(5, 8)
    expected = Explainer(model, output=output, softmax_rule=rule)
    accelerated = AcceleratedExplainer(layers_from_keras(model), output=output, softmax_rule=rule)
    classes = np.array([[3], [7]])
    for chosen in (None, classes):
        multipliers = accelerated.head_multipliers(images, references, chosen)
        assert multipliers.dtype == np.float64
        np.testing.assert_allclose(multipliers, expected.head_multipliers(images, references, chosen), rtol=0,
                                   atol=1e-5 * np.abs(multipliers).max())
    predictions = accelerated.predict(images)
    assert predictions.dtype == np.float32 and predictions.shape == (2, 10)
    np.testing.assert_allclose(predictions, expected.predict(images), rtol=0, atol=1e-6)
    mean = accelerated.expected_value(references)
    assert mean.dtype == np.float64 and mean.shape == (10,)
    np.testing.assert_allclose(mean, expected.expected_value(references), rtol=0, atol=1e-6)


def test_layers_from_the_weights_file_equal_the_layers_from_keras(tmp_path):
    architecture = {**LAB, **STACKS["batch norm"], "padding": "same", "dense_units": [16, 12], "dropout": 0.25}
    model = on_grid(build_model(**architecture), seed=9)
    path = tmp_path / "model.weights.h5"
    save_weights(model, path, architecture)
    from_file, from_keras = layers_from_weights_file(path), layers_from_keras(model)
    assert [(layer.kind, layer.options) for layer in from_file] == [(layer.kind, layer.options) for layer in from_keras]
    for file_layer, keras_layer in zip(from_file, from_keras, strict=True):
        assert all(a.tobytes() == b.tobytes() for a, b in zip(file_layer.weights, keras_layer.weights, strict=True))


def test_weights_file_without_an_architecture_is_refused_in_one_line(tmp_path):
    path = tmp_path / "bare.weights.h5"
    build_model(**LAB).save_weights(path)
    with pytest.raises(ValueError, match="holds no architecture") as error:
        layers_from_weights_file(path)
    assert "\n" not in str(error.value)


def test_unsupported_layer_is_named_in_one_line():
    inputs = keras.Input(shape=(12, 12, 1))
    x = layers.GlobalAveragePooling2D(name="squeeze")(layers.Conv2D(4, 3, activation="relu")(inputs))
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    with pytest.raises(UnsupportedModelError, match=r"layer 'squeeze' \(GlobalAveragePooling2D\)") as error:
        layers_from_keras(model)
    assert isinstance(error.value, ValueError) and "\n" not in str(error.value)


def test_imports_without_tensorflow_or_keras():
    blocked = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; import deepshap.accelerated"
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_a_second_process_takes_the_compiled_passes_from_the_disk_cache(tmp_path):
    """Each stage is a process: the passes one compiled, the next loads from the cache under ~/.cache/jax/deepshap."""
    path = tmp_path / "model.weights.h5"
    architecture = {**LAB, **STACKS["two conv blocks"]}
    save_weights(on_grid(build_model(**architecture), seed=3), path, architecture)
    script = (
        "import sys, jax, numpy as np\n"
        "from deepshap.accelerated import AcceleratedExplainer, layers_from_weights_file\n"
        "events = []\n"
        "jax.monitoring.register_event_listener(lambda event, **_: events.append(event))\n"
        "images = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)\n"
        "values = AcceleratedExplainer(layers_from_weights_file(sys.argv[1])).shap_values(images[:2], images)\n"
        "print(events.count('/jax/compilation_cache/cache_hits'), events.count('/jax/compilation_cache/cache_misses'),"
        " values.tobytes().hex())\n"
    )
    environment = {key: value for key, value in os.environ.items() if not key.startswith("JAX_COMPILATION_CACHE")}
    environment.update(HOME=str(tmp_path), XDG_CACHE_HOME="")
    ours = tmp_path / ".cache" / "jax" / "deepshap"
    chosen = tmp_path / "chosen"  # a cache the user names, with its own settings
    runs = []
    for extra in ({}, {}, {"JAX_COMPILATION_CACHE_DIR": str(chosen), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}):
        result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=False,
                                env={**environment, **extra})
        assert result.returncode == 0, result.stderr
        hits, misses, values = result.stdout.split()
        runs.append((int(hits), int(misses), values))
    (first_hits, first_misses, first_values), (hits, misses, values), (_, chosen_misses, _) = runs
    assert first_hits == 0 and first_misses > 0
    assert hits == first_misses and misses == 0  # every pass the first compiled, none compiled again
    assert values == first_values
    assert chosen_misses == first_misses and len(list(chosen.iterdir())) == len(list(ours.iterdir()))
