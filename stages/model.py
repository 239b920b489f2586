"""The lab's CNN, and seeding that makes training repeatable."""

import keras
import tensorflow as tf
from keras import layers

from stages.common import NUM_CLASSES, PipelineError

IMAGE_SHAPE = (28, 28, 1)


def build_model(filters: int = 32, units: int = 256) -> keras.Model:
    """Return the lab's CNN, uncompiled: conv, max-pool, dense, softmax.

    The defaults are the lab's; tests pass smaller sizes to keep models tiny.
    """
    inputs = keras.Input(shape=IMAGE_SHAPE)
    x = layers.Conv2D(filters, kernel_size=(3, 3), activation="relu")(inputs)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(units, activation="relu")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def load_model(path: str) -> keras.Model:
    """Return the lab's CNN with the weights saved by the train stage."""
    model = build_model()
    try:
        model.load_weights(path)
    except (OSError, ValueError) as error:
        raise PipelineError(f"cannot load model weights from {path} ({error}); run the train stage again") from None
    return model
