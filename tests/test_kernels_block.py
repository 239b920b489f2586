"""kernels_block: the compiled conv block equals the chain of plain rules it replaces.

The loop sums in float32 with fma, in its own order, where the plain rules run TensorFlow's float32
transposed convolution and float64 elsewhere: the two agree to float32's precision, not bit for bit.
A value whose terms cancel keeps an error the size of its terms, so the tolerance is relative to the
largest value (1e-6 of it, a few float32 roundings), not to each value.
"""

import keras
import numpy as np
import pytest
from keras import layers
from test_deepshap import random_images, randomize
from test_kernels_input import plain_chain

from deepshap.fused import FUSED, loop_at
from deepshap.kernels_block import block_backward
from deepshap.network import Network


def block_model(padding: str, batch_norm: bool, seed: int) -> keras.Model:
    """Conv2D (3x2) -> [BatchNormalization] -> ReLU -> MaxPooling2D on 9x9x3 inputs (a block inside a model)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(9, 9, 3))
    x = layers.Conv2D(5, (3, 2), padding=padding)(inputs)
    if batch_norm:
        x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(2)(layers.ReLU()(x))
    return randomize(keras.Model(inputs, layers.Dense(3)(layers.Flatten()(x))), seed)


@pytest.mark.parametrize("padding", ["valid", "same"])  # same: one row above, the odd column on the right alone
@pytest.mark.parametrize("batch_norm", [False, True])
def test_conv_block_equals_its_plain_rules(padding, batch_norm):
    network = Network(block_model(padding, batch_norm, seed=1), fuse=False)
    block = loop_at(next(loop for loop in FUSED if loop.name == "conv block"), network.steps, 0)
    steps = network.steps[: block.end + 1]
    image, references = random_images(1, (9, 9, 3), 2), random_images(4, (9, 9, 3), 3)
    x, r = network.forward(image), network.forward(references)
    grad = np.random.default_rng(4).normal(size=(4, 3) + steps[-1].output_shape)  # (refs, classes, pool output)
    expected = plain_chain(steps, grad, x, r, 0)
    (relu,) = block.reads
    constants = block.constants
    actual = block_backward(grad, x[relu][0], r[relu], constants["kernel"], constants["padding"],
                            constants["pool_size"], constants["input_shape"])
    assert actual.shape == expected.shape == (4, 3, 9, 9, 3)
    largest = np.abs(expected).max()
    assert largest > 1e-2  # the comparison is not between zeros
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6 * largest)
