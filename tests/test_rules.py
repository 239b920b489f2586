"""rules: the table from Keras layer kind to its plain rule, each rule adding up to the change of its layer, and
a caller's new rule."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from test_deepshap import random_images, randomize

from deepshap import RULES, Explainer, UnsupportedModelError, register_rule
from deepshap.network import layer_steps

LAYERS = {
    "Dense": ((20,), lambda: layers.Dense(7)),
    "Conv2D, valid": ((7, 7, 2), lambda: layers.Conv2D(3, (3, 2))),
    "Conv2D, same, stride 2": ((7, 7, 2), lambda: layers.Conv2D(3, 3, strides=2, padding="same")),
    "BatchNormalization": ((5, 5, 3), layers.BatchNormalization),
    "AveragePooling2D, same": ((7, 7, 2), lambda: layers.AveragePooling2D(2, padding="same")),
    "Flatten": ((4, 4, 2), layers.Flatten),
    "ReLU": ((6, 6, 2), layers.ReLU),
    "MaxPooling2D, valid": ((7, 7, 2), lambda: layers.MaxPooling2D(2)),
    "MaxPooling2D, same": ((7, 7, 2), lambda: layers.MaxPooling2D(2, padding="same")),
}


def one_step(name: str, seed: int = 0):
    """Return the one step of a layer of the kind, on random weights."""
    input_shape, make = LAYERS[name]
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape)
    layer = make()
    randomize(keras.Model(inputs, layer(inputs)), seed)
    (step,) = layer_steps(layer)
    return step


@pytest.mark.parametrize("name", LAYERS)
def test_each_rule_adds_up_to_its_layers_change(name):
    """DeepLIFT's summation to delta, layer by layer: sum of grad * (f(x) - f(r)) over the output equals sum of
    the rule's multipliers * (x - r) over the input, for every reference and class."""
    step = one_step(name)
    rng = np.random.default_rng(1)
    image = rng.normal(size=step.input_shape).astype(np.float32)
    references = rng.normal(size=(4,) + step.input_shape).astype(np.float32)
    grad = rng.normal(size=(4, 3) + step.output_shape)  # (refs, classes, *output)
    outputs = step.forward(tf.constant(np.concatenate([image[np.newaxis], references]))).numpy().astype(np.float64)
    values = (image, references) if step.rule.needs_values else (None, None)  # as deepshap.network passes them
    multipliers = step.backward(grad, *values)  # (refs, classes, *input)
    assert multipliers.shape == (4, 3) + step.input_shape
    axes = tuple(range(2, grad.ndim))
    change = (grad * (outputs[0] - outputs[1:])[:, np.newaxis]).sum(axis=axes)
    explained = (multipliers * (image - references).astype(np.float64)[:, np.newaxis]).sum(axis=tuple(
        range(2, multipliers.ndim)))
    # The forward pass is float32, the rules float64 (the conv's float32): equal to float32's precision.
    np.testing.assert_allclose(explained, change, rtol=0, atol=1e-5 * np.abs(change).max())


def test_a_dense_layers_relu_is_a_step_of_its_own():
    inputs = keras.Input(shape=(5,))
    dense = layers.Dense(4, activation="relu")
    dense(inputs)
    assert [step.rule for step in layer_steps(dense)] == [RULES[layers.Dense], RULES[layers.ReLU]]
    assert [step.rule for step in layer_steps(dense, is_head=True)] == [RULES[layers.Dense]]


def global_average_pool(step, grad, image, references):
    # (refs, classes, channels) -> (refs, classes, rows, columns, channels)
    rows, columns, _ = step.input_shape
    return np.broadcast_to((grad / (rows * columns))[:, :, np.newaxis, np.newaxis], grad.shape[:2] + step.input_shape)


def test_a_caller_registers_a_rule_for_a_new_layer_kind(monkeypatch):
    keras.utils.set_random_seed(2)
    inputs = keras.Input(shape=(10, 10, 1))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(inputs))
    model = randomize(keras.Model(inputs, layers.Dense(3, activation="softmax")(x)), 2)
    with pytest.raises(UnsupportedModelError, match="GlobalAveragePooling2D"):
        Explainer(model)
    monkeypatch.setitem(RULES, layers.GlobalAveragePooling2D, None)  # undone after the test
    register_rule(layers.GlobalAveragePooling2D, global_average_pool)
    explainer = Explainer(model, output="logit", chunk_size=4)
    image, background = random_images(1, (10, 10, 1), 3), random_images(6, (10, 10, 1), 4)
    values = explainer.shap_values(image, background)
    # Exact rules add up: the values sum to the logits' change from the background's mean.
    expected = explainer.predict(image).astype(np.float64) - explainer.expected_value(background)
    np.testing.assert_allclose(values.reshape(1, -1, 3).sum(axis=1), expected, rtol=0, atol=1e-5)
