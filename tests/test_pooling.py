"""pooling: the windows of a pooling layer, and shap's max-pool rule on ties (its sum to delta: tests/test_rules.py)."""

import keras
import numpy as np
import pytest
from keras import layers

from deepshap.network import layer_steps
from deepshap.pooling import Windows, max_pool, unwindow, windows


def pool_step(padding: str, input_shape=(7, 5, 2)):
    inputs = keras.Input(shape=input_shape)
    layer = layers.MaxPooling2D(2, padding=padding)
    layer(inputs)
    (step,) = layer_steps(layer)
    return step


@pytest.mark.parametrize("padding, windows_shape", [("valid", (3, 2)), ("same", (4, 3))])
def test_windows_cover_the_input_as_tensorflow_pads_it(padding, windows_shape):
    step = pool_step(padding)
    w = Windows.of(step)
    values = np.random.default_rng(0).normal(size=(3, 7, 5, 2)).astype(np.float32)
    shaped = windows(w, values)
    assert shaped.shape == (3,) + windows_shape + (2, 4)  # (n, out rows, out columns, channels, window)
    np.testing.assert_array_equal(shaped.max(axis=-1), step.forward(values).numpy())
    back = unwindow(w, shaped)
    covered = (slice(None), slice(windows_shape[0] * 2), slice(windows_shape[1] * 2))
    np.testing.assert_array_equal(back[covered], values[covered])  # 'valid' drops the last row and column


def test_max_pool_rule_routes_a_tie_to_the_first_maximum():
    """shap's rule follows TensorFlow's MaxPoolGrad: a window's change goes to its first maximum alone."""
    step = pool_step("valid", (2, 2, 1))
    image = np.array([[[3.0], [3.0]], [[1.0], [3.0]]], dtype=np.float32)  # three maxima, the first at (0, 0)
    references = np.zeros((1, 2, 2, 1), dtype=np.float32)
    multipliers = max_pool(step, np.ones((1, 1, 1, 1, 1)), image, references)  # (refs, classes, 2, 2, 1)
    np.testing.assert_array_equal(multipliers[0, 0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])
