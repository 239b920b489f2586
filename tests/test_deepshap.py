"""The fast engine against shap.DeepExplainer itself, on small random models of the supported family."""

import keras
import numpy as np
import pytest
from keras import layers

from deepshap import Explainer, UnsupportedModelError, shap_reference


def random_model(seed, image_shape, filters, kernel, pool, units, classes):
    """Return a model of the family with random weights and biases (positive ones make pooling ties)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=image_shape)
    x = layers.Conv2D(filters, kernel, activation="relu")(inputs)
    x = layers.MaxPooling2D(pool)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(units, activation="relu")(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0.0, 0.1, layer.bias.shape).astype(np.float32))
    return model


def random_images(count, image_shape, seed):
    """Return images in [0, 1] with a blank border, as Fashion-MNIST has: flat regions tie in max-pool."""
    rng = np.random.default_rng(seed)
    images = rng.random((count,) + image_shape, dtype=np.float32)
    images[:, :3] = 0.0
    images[:, :, -2:] = 0.0
    return images


CASES = [
    # seed, image shape, filters, kernel, pool, units, classes, background, chunk
    (0, (28, 28, 1), 32, 3, 2, 256, 10, 40, 16),  # the lab's shapes
    (1, (12, 12, 1), 4, 3, 2, 16, 3, 25, 7),
    (2, (13, 11, 2), 6, (3, 2), (3, 2), 20, 5, 30, 30),  # two channels, odd kernel and pool, uneven sizes
    (3, (10, 10, 1), 3, 5, 3, 8, 4, 9, 1),  # chunks of one reference
]


@pytest.mark.parametrize("seed, image_shape, filters, kernel, pool, units, classes, size, chunk", CASES)
def test_fast_engine_equals_shap(seed, image_shape, filters, kernel, pool, units, classes, size, chunk):
    model = random_model(seed, image_shape, filters, kernel, pool, units, classes)
    background = random_images(size, image_shape, seed + 100)
    images = random_images(3, image_shape, seed + 200)
    fast = Explainer(model, chunk_size=chunk).shap_values(images, background)
    reference = shap_reference(model, background, images)
    assert fast.shape == reference.shape == (3,) + image_shape + (classes,)
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-5)
    assert np.abs(reference).max() > 1e-3  # the comparison is not between zeros
    # Additivity is tested on trained models (test_explain): on random ones shap's own softmax
    # rule, (dz - dmax) / dz, amplifies float32 rounding where a logit barely moves, and shap's
    # values miss f(x) - E f(background) by up to 1e-4 there; the fast engine misses it alike.


def test_unsupported_layer_is_named_with_the_way_out():
    inputs = keras.Input(shape=(12, 12, 1))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    x = layers.AveragePooling2D(2, name="smooth")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(8, activation="relu")(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    with pytest.raises(UnsupportedModelError, match=r"layer 'smooth' \(AveragePooling2D\)"):
        Explainer(model, chunk_size=4)


def test_other_activation_is_unsupported():
    inputs = keras.Input(shape=(12, 12, 1))
    x = layers.Conv2D(4, 3, activation="tanh", name="tanh_conv")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(8, activation="relu")(x)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(x))
    with pytest.raises(UnsupportedModelError, match="tanh_conv"):
        Explainer(model, chunk_size=4)
