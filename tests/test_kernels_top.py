"""kernels_top: the compiled top, Dense -> ReLU -> the head's Dense, equals the chain of plain rules it replaces.

The loop sums in float32 with fma, where the plain Dense rules multiply in float64: the two agree to
float32's precision, not bit for bit. A value whose terms cancel keeps an error the size of its
terms, so the tolerance is relative to the largest value (1e-6 of it), not to each value.
"""

import keras
import numpy as np
from keras import layers
from test_deepshap import randomize
from test_kernels_input import plain_chain

from deepshap.fused import FUSED, loop_at
from deepshap.kernels_top import dense_top_backward
from deepshap.network import Network
from deepshap.rules import relu_multipliers


def test_top_equals_its_plain_rules():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(300,))  # more than one tile of the loop's 256 inputs
    model = randomize(keras.Model(inputs, layers.Dense(4)(layers.Dense(40, activation="relu")(inputs))), 0)
    network = Network(model, fuse=False)
    top = loop_at(next(loop for loop in FUSED if loop.name == "top"), network.steps, 0)
    assert (top.start, top.end) == (0, 2)
    rng = np.random.default_rng(1)
    image, references = rng.normal(size=(1, 300)).astype(np.float32), rng.normal(size=(6, 300)).astype(np.float32)
    references[0] = image[0]  # every unit unchanged: the ReLU rule falls back to the reference's gradient
    x, r = network.forward(image), network.forward(references)
    grad = rng.normal(size=(6, 4, 4))  # (refs, classes, logits)
    expected = plain_chain(network.steps, grad, x, r, 0)
    (relu,) = top.reads
    rule = relu_multipliers(x[relu][0][np.newaxis], r[relu])
    actual = dense_top_backward(grad, x[relu][0] > 0, rule, top.constants["hidden"], top.constants["head"])
    largest = np.abs(expected).max()
    assert largest > 1e-2  # the comparison is not between zeros
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6 * largest)
