"""network: a model as a chain of steps, its forward pass keeping what the rules read."""

import keras
import numpy as np
from keras import layers
from test_deepshap import random_images, softmax, stack

from deepshap.network import Network
from deepshap.rules import BATCH_NORM, CONV, DENSE, MAX_POOL, RELU, RESHAPE


def test_each_layer_gives_its_map_then_its_activation_and_the_head_its_map_alone():
    inputs = keras.Input(shape=(10, 10, 1))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3, activation="relu")(inputs))
    x = layers.Flatten()(layers.MaxPooling2D(2)(layers.ReLU()(x)))
    x = layers.Activation("relu")(layers.Dropout(0.5)(layers.Dense(6)(x)))
    network = Network(keras.Model(inputs, layers.Dense(3, activation="softmax")(x)), fuse=False)
    rules = [CONV, RELU, BATCH_NORM, RELU, MAX_POOL, RESHAPE, DENSE, RELU, DENSE]  # no Dropout, no softmax
    assert [step.rule for step in network.steps] == rules
    assert network.head == "softmax" and network.num_classes == 3


def test_forward_keeps_the_inputs_the_rules_read_and_gives_the_logits():
    model = stack("lab", seed=1)  # Conv2D -> ReLU -> MaxPooling2D -> Flatten -> Dense -> ReLU -> Dense
    images = random_images(3, (14, 14, 1), 2)
    plain, fused = Network(model, fuse=False), Network(model)
    assert plain.kept == {1, 2, 5}  # the ReLUs' and the max-pool's inputs
    assert fused.kept == {1, 5}  # the ReLUs' inputs, which the compiled loops read
    values = fused.forward(images)
    assert set(values) == {1, 5, "logits"} and values[1].shape == (3, 12, 12, 6)
    np.testing.assert_allclose(softmax(values["logits"]), model.predict(images, verbose=0), rtol=0, atol=1e-6)


def test_an_images_forward_values_do_not_depend_on_the_images_beside_it_nor_on_its_place():
    """TensorFlow's float32 product and convolution (oneDNN) gave a row other bits by its batch and place in it;
    the forward's float64 Dense and Conv2D do not. Two blocks, the second's sums over 288 terms."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.MaxPooling2D(2)(layers.Conv2D(32, 3, activation="relu")(inputs))
    x = layers.MaxPooling2D(2)(layers.Conv2D(64, 3, activation="relu")(x))
    x = layers.Dense(128, activation="relu")(layers.Flatten()(x))
    network = Network(keras.Model(inputs, layers.Dense(10, activation="softmax")(x)))
    images = random_images(40, (28, 28, 1), 3)
    together = network.forward(images)
    reversed_order = network.forward(images[::-1].copy())
    fewer = {count: network.forward(images[:count]) for count in (2, 5, 17)}
    for key, values in together.items():
        np.testing.assert_array_equal(reversed_order[key][::-1], values)
        for count, alone in fewer.items():
            np.testing.assert_array_equal(alone[key], values[:count])
