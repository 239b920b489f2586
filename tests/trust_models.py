"""Small Keras models and images for the trust checks' tests: known answers on 6x6 and 8x8 images."""

import keras
import numpy as np
from keras import layers

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


def small_model(seed: int = 0) -> keras.Model:
    """Return a random model of the lab's kind on 8x8 images with 10 classes."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(8, 8, 1))
    x = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, activation="relu")(inputs))
    x = layers.Dense(12, activation="relu")(layers.Flatten()(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def random_images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 8, 8, 1), dtype=np.float32)


def speckled(count: int, seed: int, pixel: float) -> np.ndarray:
    """Return random dim images with PIXEL set to pixel."""
    images = np.random.default_rng(seed).uniform(0.0, 0.3, (count, SIDE, SIDE, 1)).astype(np.float32)
    images[:, PIXEL[0], PIXEL[1]] = pixel
    return images
