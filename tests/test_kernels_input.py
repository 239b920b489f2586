"""kernels_input: the compiled input block equals the chain of plain rules it replaces, summed over references.

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

from deepshap.fused import FUSED, loop_at
from deepshap.kernels_input import pool_conv_backward
from deepshap.network import Network


def input_block_model(batch_norm: bool, seed: int) -> keras.Model:
    """Conv2D (3x3, valid) -> [BatchNormalization] -> ReLU -> MaxPooling2D on 11x11 images, then the head."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(11, 11, 1))
    x = layers.Conv2D(6, 3)(inputs)
    if batch_norm:
        x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(2)(layers.ReLU()(x))  # 9x9 -> 4x4: the conv's last row and column are in no window
    return randomize(keras.Model(inputs, layers.Dense(3)(layers.Flatten()(x))), seed)


def plain_chain(steps: list, grad: np.ndarray, image: dict, references: dict, index_image: int) -> np.ndarray:
    """Return the plain rules' multipliers at the input of steps (the chain's first), from grad at their output."""
    for index in reversed(range(len(steps))):
        step = steps[index]
        grad = step.backward(grad, image[index][index_image] if step.rule.needs_values else None, references.get(index))
    return grad


@pytest.mark.parametrize("batch_norm", [False, True])
def test_input_block_equals_its_plain_rules_summed_over_references(batch_norm):
    network = Network(input_block_model(batch_norm, seed=1), fuse=False)
    block = loop_at(next(loop for loop in FUSED if loop.name == "input block"), network.steps, 0)
    steps = network.steps[: block.end + 1]
    images, references = random_images(2, (11, 11, 1), 2), random_images(5, (11, 11, 1), 3)
    x, r = network.forward(images), network.forward(references)
    pooled_grad = np.random.default_rng(4).normal(size=(2, 5, 3, 4 * 4 * 6))  # (images, refs, classes, pool output)
    expected = np.zeros((2, 11, 11, 1, 3))
    for image in range(2):
        grad = plain_chain(steps, pooled_grad[image].reshape((5, 3) + steps[-1].output_shape), x, r, image)
        expected[image] = np.einsum("rc...,r...->...c", grad, (images[image] - references).astype(np.float64))
    totals = np.zeros_like(expected)
    (relu,) = block.reads
    pool_conv_backward(pooled_grad, images, x[relu], references, r[relu], block.constants["kernel"],
                       *block.constants["pool_size"], totals)
    largest = np.abs(expected).max()
    assert largest > 1e-2  # the comparison is not between zeros
    np.testing.assert_allclose(totals, expected, rtol=0, atol=1e-6 * largest)


def test_mixed_logit_rows_equal_the_rows_they_mix():
    """With mix, the loop takes each logit's multipliers and mixes them at the input by each class's row of mix:
    the same values as the classes' own multipliers (their mix of the logits' rows), the backward being linear."""
    network = Network(input_block_model(batch_norm=False, seed=5), fuse=False)
    block = loop_at(next(loop for loop in FUSED if loop.name == "input block"), network.steps, 0)
    images, references = random_images(2, (11, 11, 1), 6), random_images(5, (11, 11, 1), 7)
    x, r = network.forward(images), network.forward(references)
    rng = np.random.default_rng(8)
    # (images, refs, logits, pool output) float32, as the fused top gives them: the loop compiled for these
    # types is the one the lab's model runs with several rules (a float64 one would be compiled for this test alone).
    logit_rows = rng.normal(size=(2, 5, 3, 4 * 4 * 6)).astype(np.float32)
    mix = rng.normal(size=(2, 5, 7, 3))  # (images, refs, classes, logits): more classes than logits
    (relu,) = block.reads
    args = (images, x[relu], references, r[relu], block.constants["kernel"], *block.constants["pool_size"])
    expected, mixed = np.zeros((2, 11, 11, 1, 7)), np.zeros((2, 11, 11, 1, 7))
    pool_conv_backward(np.einsum("krcl,krlp->krcp", mix, logit_rows), *args, expected)
    pool_conv_backward(logit_rows, *args, mixed, mix)
    largest = np.abs(expected).max()
    assert largest > 1e-2
    np.testing.assert_allclose(mixed, expected, rtol=0, atol=1e-5 * largest)
