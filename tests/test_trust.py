"""trust: completeness, convergence, deletion and randomization checks, on models whose answer is known."""

import json

import keras
import numpy as np
import pytest
import yaml
from conftest import run_stage, write_params
from keras import layers
from test_fetch import assert_one_line_error

from stages.explain import fast_values
from stages.model import load_model
from stages.trust import (
    area, correlation, deletion_test, images_outside, randomized_values, rank_correlation, relative_distance,
)

SIDE = 6
PIXEL = (2, 3)  # the only pixel the one-pixel model looks at


def one_pixel_model() -> keras.Model:
    """Return a model of the supported family whose output depends on pixel PIXEL only: class 0 when it is bright."""
    inputs = keras.Input(shape=(SIDE, SIDE, 1))
    x = layers.Conv2D(1, 1, activation="relu")(inputs)
    x = layers.MaxPooling2D(1)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1, activation="relu")(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x))
    conv, _, _, dense, output = model.layers[1:]
    conv.set_weights([np.ones((1, 1, 1, 1)), np.zeros(1)])
    kernel = np.zeros((SIDE * SIDE, 1))
    kernel[PIXEL[0] * SIDE + PIXEL[1]] = 1.0
    dense.set_weights([kernel, np.zeros(1)])
    output.set_weights([np.array([[5.0, -5.0]]), np.zeros(2)])
    return model


def speckled(count: int, seed: int, pixel: float) -> np.ndarray:
    """Return random dim images with PIXEL set to pixel."""
    images = np.random.default_rng(seed).uniform(0.0, 0.3, (count, SIDE, SIDE, 1)).astype(np.float32)
    images[:, PIXEL[0], PIXEL[1]] = pixel
    return images


def test_one_pixel_model_gets_all_attribution_there_and_passes_the_deletion_test():
    model = one_pixel_model()
    images, background = speckled(4, 0, 1.0), speckled(12, 1, 0.0)
    values = fast_values(model, background, images, chunk_size=5)
    elsewhere = np.ones((SIDE, SIDE), dtype=bool)
    elsewhere[PIXEL] = False
    assert np.abs(values[:, elsewhere]).max() == 0.0
    assert values[:, PIXEL[0], PIXEL[1], 0, 0].min() > 0.4  # from about 0.5 to about 1

    curves = deletion_test(model, images, values, background.mean(axis=0), 36, 5, np.random.default_rng(0))
    areas = {name: area(c).mean() for name, c in curves.items()}
    # SHAP order removes the pixel first: the probability falls to 0.5 at once; reverse order keeps it to the end.
    assert areas["shap_order"] < 0.52 < areas["random_order"] < areas["reverse_order"]


def test_identical_backgrounds_give_distance_zero_and_disjoint_ones_do_not(prepared):
    model = load_model(prepared / "models/model.weights.h5")
    background = np.load(prepared / "data/background.npy")
    images = np.load(prepared / "data/test/x.npy")[:3]
    first = fast_values(model, background[:10], images, chunk_size=4)
    assert relative_distance(first, fast_values(model, background[:10].copy(), images, chunk_size=4)) == 0.0
    other = fast_values(model, background[10:], images, chunk_size=4)
    assert relative_distance(first, other) > 0.01
    assert correlation(first, first) == pytest.approx(1.0, abs=1e-12)
    assert correlation(first, other) < 1.0 - 1e-6


def test_randomized_model_fails_the_correlation_threshold_and_the_trained_one_would_not(prepared):
    model = load_model(prepared / "models/model.weights.h5")
    background = np.load(prepared / "data/background.npy")[:10]
    images = np.load(prepared / "data/test/x.npy")[:5]
    classes = model.predict(images, verbose=0).argmax(axis=1)
    trained = fast_values(model, background, images, chunk_size=10)
    cascade = randomized_values(model, images, background, seed=0, chunk_size=10)
    assert len(cascade) == 3  # output, dense, conv
    assert rank_correlation(trained, trained, classes) == pytest.approx(1.0, abs=1e-12)
    assert rank_correlation(trained, cascade[-1], classes) < 0.5  # params.yaml's threshold
    np.testing.assert_array_equal(cascade[-1], randomized_values(model, images, background, 0, 10)[-1])  # seeded


def test_images_outside_leaves_out_the_background():
    images = np.arange(5 * 4, dtype=np.float32).reshape(5, 2, 2, 1)
    np.testing.assert_array_equal(images_outside(images, images[[3, 1]]), images[[0, 2, 4]])


def test_stage_writes_metrics_curves_and_figure(prepared, tmp_path):
    outputs = [tmp_path / name for name in ("trust.json", "deletion.csv", "convergence.csv", "randomization.png")]
    run_stage(
        "trust", "models/model.weights.h5", "data/background.npy", "data/train", "data/test", *map(str, outputs),
        cwd=prepared,
    )
    metrics = json.loads(outputs[0].read_text())
    assert metrics["images"] == 10
    assert metrics["completeness"]["max_additivity_error"] < 1e-5
    assert metrics["convergence"]["compared_size"] == 20 and metrics["convergence"]["relative_l2"] > 0
    assert set(metrics["randomization"]["rank_correlation"]) == {"top1_layers", "top2_layers", "top3_layers"}
    deletion = np.loadtxt(outputs[1], delimiter=",", skiprows=1)
    assert outputs[1].read_text().startswith("fraction_removed,shap_order,random_order,reverse_order\n")
    assert deletion.shape == (8, 4) and deletion[0, 0] == 0 and deletion[-1, 0] == 1
    assert np.loadtxt(outputs[2], delimiter=",", skiprows=1)[:, 0].tolist() == [5, 20]
    assert outputs[3].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_too_large_convergence_size_is_a_clear_error(prepared, tmp_path):
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["trust"]["convergence_sizes"] = [100]
    write_params(tmp_path, params)
    args = [str(prepared / p) for p in ("models/model.weights.h5", "data/background.npy", "data/train", "data/test")]
    result = run_stage("trust", *args, *(str(tmp_path / n) for n in ("m.json", "d.csv", "c.csv", "r.png")),
                       cwd=tmp_path, check=False)
    assert_one_line_error(result, "trust.convergence_sizes holds 100", "lower it in params.yaml")
    assert not (tmp_path / "m.json").exists()
