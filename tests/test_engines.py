"""engines: the params pick an engine, every engine answers the same calls, and bad choices are one line."""

import sys

import keras
import numpy as np
import pytest
from conftest import assert_as_exact_as_shap
from keras import layers
from trust_models import random_images, small_model

from deepshap import shap_reference
from fashion_shap.engines import ShapEngine, check_engine_params, chosen_classes, make_explainer, say_where
from fashion_shap.params import PipelineError

FAST = {"engine": "fast", "output": "probability", "softmax_rule": "shap"}


@pytest.mark.parametrize("change, message", [
    ({"engine": "gpu-please"}, "explain.engine must be one of fast, accelerated, shap, got 'gpu-please'"),
    ({"output": "odds"}, "explain.output must be one of probability, logit"),
    ({"softmax_rule": "owen"}, "explain.softmax_rule must be one of shap, shapley"),
    ({"engine": "shap", "softmax_rule": "shapley"}, "explain.engine: shap has only shap's softmax rule"),
])
def test_params_that_do_not_fit_are_named(change, message):
    check_engine_params(FAST)
    with pytest.raises(PipelineError, match=message):
        check_engine_params(dict(FAST, **change))


@pytest.mark.parametrize("output", ["probability", "logit"])
def test_both_engines_give_the_same_values_outputs_and_expectation_for_chosen_classes(output):
    model, images, background = small_model(), random_images(2, 0), random_images(5, 1)
    classes = np.array([[3, 1], [0, 9]])
    engines = [make_explainer(model, engine, output, "shap", chunk_size=2) for engine in ("fast", "shap")]
    assert isinstance(engines[1], ShapEngine)
    done = []
    fast, shap = (engine.shap_values(images, background, classes, progress=done.append) for engine in engines)
    assert fast.shape == shap.shape == images.shape + (2,)
    if output == "probability":
        every_class = shap_reference(model, background, images, dtype="float64")
        assert_as_exact_as_shap(fast, shap, chosen_classes(every_class, classes))
    else:
        np.testing.assert_allclose(shap, fast, rtol=0, atol=1e-5 * np.abs(fast).max())
    assert sum(done) == pytest.approx(2 * len(background))  # each engine counts background images done
    # The fast engine's forward rounds each layer's float64 output once, TensorFlow's adds in float32.
    np.testing.assert_allclose(engines[1].predict(images), engines[0].predict(images), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(engines[1].expected_value(background), engines[0].expected_value(background), rtol=1e-5)


def test_a_model_the_fast_engine_cannot_take_names_the_param_to_change():
    inputs = keras.Input(shape=(8, 8, 1))
    x = layers.Flatten()(layers.Conv2D(2, 3, activation="tanh")(inputs))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    with pytest.raises(PipelineError, match="set explain.engine: shap in params.yaml"):
        make_explainer(model, "fast", "probability", "shap", chunk_size=2)
    assert isinstance(make_explainer(model, "shap", "probability", "shap", chunk_size=2), ShapEngine)


@pytest.mark.parametrize("output, rule", [("probability", "shapley"), ("logit", "shap")])
def test_the_accelerated_engine_gives_the_fast_engines_values_and_says_where_it_runs(output, rule, capsys):
    """With the Shapley rule or the logits, no division by a logit's change: the two engines' float32
    forward passes (TensorFlow's, XLA's) may differ in their last bits and the values stay within 1e-5."""
    model, images, background = small_model(), random_images(2, 0), random_images(5, 1)
    classes = np.array([[3, 1], [0, 9]])
    fast = make_explainer(model, "fast", output, rule, chunk_size=2).shap_values(images, background, classes)
    say_where.cache_clear()  # it says so once per process
    accelerated = make_explainer(model, "accelerated", output, rule, chunk_size=2)
    assert "JAX finds no GPU or TPU here" in capsys.readouterr().out  # this machine has none
    values = accelerated.shap_values(images, background, classes)
    np.testing.assert_allclose(values, fast, rtol=0, atol=1e-5 * np.abs(fast).max())


def test_the_accelerated_engine_without_jax_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # as where JAX is not installed
    with pytest.raises(PipelineError, match=r"explain.engine: accelerated needs JAX .*pip install -e '.\[gpu\]'"):
        make_explainer(small_model(), "accelerated", "probability", "shap", chunk_size=2)
