"""kernels_input: the compiled input block equals the chain of plain rules it replaces, summed over references.

The loop sums in float32 with fma, in its own order, where the plain rules run TensorFlow's float32
transposed convolution and float64 elsewhere: the two agree to float32's precision, not bit for bit.
A value whose terms cancel keeps an error the size of its terms, so the tolerance is relative to the
largest value (1e-6 of it, a few float32 roundings), not to each value.
"""

import keras
import numba
import numpy as np
import pytest
from keras import layers
from test_deepshap import random_images, randomize, stack
from test_kernels import fused_multiply_add

from deepshap import Explainer
from deepshap.fused import FUSED, loop_at
from deepshap.head import LINEAR_EPSILON, NONLINEAR_EPSILON
from deepshap.kernels import LANES, VECTOR
from deepshap.kernels_input import (
    PAIR,
    add_pair_rows,
    add_region,
    pair_factors,
    pair_weights,
    pool_conv_backward,
    region_weights,
    window_routes,
)
from deepshap.network import Network


def input_block_model(batch_norm: bool, seed: int, kernel: int = 3, pool: int = 2, size: int = 11) -> keras.Model:
    """Conv2D (kernel x kernel, valid) -> [BatchNormalization] -> ReLU -> MaxPooling2D (pool) on size x size images,
    then the head. The defaults: 11x11 -> 9x9 -> 4x4, the conv's last row and column in no window."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(size, size, 1))
    x = layers.Conv2D(6, kernel)(inputs)
    if batch_norm:
        x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(pool)(layers.ReLU()(x))
    return randomize(keras.Model(inputs, layers.Dense(3)(layers.Flatten()(x))), seed)


def plain_chain(steps: list, grad: np.ndarray, image: dict, references: dict, index_image: int) -> np.ndarray:
    """Return the plain rules' multipliers at the input of steps (the chain's first), from grad at their output."""
    for index in reversed(range(len(steps))):
        step = steps[index]
        grad = step.backward(grad, image[index][index_image] if step.rule.needs_values else None, references.get(index))
    return grad


# The lab's shape (a region of 4 x 4 positions, one vector of 8 lanes); 12 classes in 16 lanes, the CPU's widest
# vector where it has AVX-512; a 5x5 kernel and 3x3 pools, 7 x 7 positions in groups and one past them, 24 lanes;
# 2 classes side by side, a region row's 4 positions x 2 classes a vector (add_pair_rows).
@pytest.mark.parametrize(("batch_norm", "kernel", "pool", "size", "classes"),
                         [(False, 3, 2, 11, 3), (True, 3, 2, 11, 3), (False, 3, 2, 11, 12), (False, 5, 3, 14, 17),
                          (False, 3, 2, 11, 2)])
def test_input_block_equals_its_plain_rules_summed_over_references(batch_norm, kernel, pool, size, classes):
    network = Network(input_block_model(batch_norm, 1, kernel, pool, size), fuse=False)
    block = loop_at(next(loop for loop in FUSED if loop.name == "input block"), network.steps, 0)
    steps = network.steps[: block.end + 1]
    images, references = random_images(2, (size, size, 1), 2), random_images(5, (size, size, 1), 3)
    x, r = network.forward(images), network.forward(references)
    outputs = int(np.prod(steps[-1].output_shape))
    pooled_grad = np.random.default_rng(4).normal(size=(2, 5, classes, outputs))  # (images, refs, classes, pool output)
    expected = np.zeros((2, size, size, 1, classes))
    for image in range(2):
        grad = plain_chain(steps, pooled_grad[image].reshape((5, classes) + steps[-1].output_shape), x, r, image)
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


@numba.njit(cache=True)
def region_sums(flat, base, offsets, value, kept, corners, table, count):
    # Five positions from the second, in the narrowest vectors and the widest: literal sizes, as the loop has them.
    add_region(flat, base, offsets, 1, 5, 0, LANES, value, kept, corners, table, count)
    add_region(flat, base, offsets, 1, 5, LANES, VECTOR, value, kept, corners, table, count)


def test_add_region_adds_each_filter_in_order_one_fma_a_lane():
    rng = np.random.default_rng(0)
    lanes = LANES + VECTOR
    table = region_weights(rng.normal(size=(4, 3, 3, 1)), 2, 2)  # (filters, window positions, 4 x 4 region)
    value = rng.normal(size=(4, lanes)).astype(np.float32)
    kept, corners = np.array([3, 0, 2], dtype=np.int64), np.array([1, 0, 3], dtype=np.int64)
    offsets = np.arange(16, dtype=np.int64) * lanes * 2  # every other vector of lanes in flat
    flat = np.zeros(40 * lanes, dtype=np.float32)
    flat[3 * lanes : 4 * lanes] = rng.normal(size=lanes)  # position 1's sum does not start at 0
    expected = flat.copy()
    for t in range(3):
        for p in range(1, 6):
            at = lanes + offsets[p]
            for c in range(lanes):
                expected[at + c] = fused_multiply_add(table[kept[t], corners[t], p], value[t, c], expected[at + c])
    region_sums(flat, lanes, offsets, value, kept, corners, table, 3)
    assert (table[kept, corners][:, 1:6] == 0).any()  # zero weights, outside a filter's kernel, add nothing
    assert np.count_nonzero(flat != 0) == 5 * lanes  # the five positions and no others
    np.testing.assert_array_equal(flat, expected)  # bit for bit: the same bytes on any CPU


@numba.njit(cache=True)
def pair_row_sums(flat, base, row_offsets, value, kept, corners, strips, count):
    add_pair_rows(flat, base, row_offsets, 4, 1, value, kept, corners, strips, count)  # 4 rows of one vector


def test_add_pair_rows_adds_each_filter_in_order_one_fma_a_lane_as_add_region_does():
    rng = np.random.default_rng(0)
    table = region_weights(rng.normal(size=(4, 3, 3, 1)), 2, 2)  # (filters, window positions, 4 x 4 region)
    value = rng.normal(size=(4, PAIR)).astype(np.float32)
    kept, corners = np.array([3, 0, 2], dtype=np.int64), np.array([1, 0, 3], dtype=np.int64)
    columns = 6  # the region's 4 x 4 positions in a 6-column image, PAIR lanes a position
    row_offsets = np.arange(4, dtype=np.int64) * columns * PAIR
    flat = np.zeros(7 * columns * PAIR, dtype=np.float32)
    flat[PAIR * columns + 1 : PAIR * (columns + 8)] = rng.normal(size=PAIR * 8 - 1)  # sums that do not start at 0
    expected = flat.copy()
    for t in range(3):
        for u in range(4):
            for v in range(4):
                for c in range(PAIR):
                    at = PAIR * columns + row_offsets[u] + v * PAIR + c
                    expected[at] = fused_multiply_add(table[kept[t], corners[t], u * 4 + v], value[t, c], expected[at])
    pair_row_sums(flat, PAIR * columns, row_offsets, value, kept, corners, pair_weights(table, 4), 3)
    assert (pair_weights(table, 4)[kept, corners] == 0).any()  # zero weights, outside a filter's kernel, add nothing
    np.testing.assert_array_equal(flat, expected)  # bit for bit, and nothing written outside the region's rows


def test_two_classes_side_by_side_give_the_bytes_of_the_same_classes_padded_among_others():
    network = Network(input_block_model(False, 1), fuse=False)
    block = loop_at(next(loop for loop in FUSED if loop.name == "input block"), network.steps, 0)
    images, references = random_images(2, (11, 11, 1), 2), random_images(5, (11, 11, 1), 3)
    x, r = network.forward(images), network.forward(references)
    (relu,) = block.reads
    outputs = int(np.prod(network.steps[block.end].output_shape))
    pooled_grad = np.random.default_rng(4).normal(size=(2, 5, 3, outputs)).astype(np.float32)
    totals = {}
    for classes in (2, 3):  # 2: add_pair_rows; 3: add_region, padded to 8 lanes
        totals[classes] = np.zeros((2, 11, 11, 1, classes))
        pool_conv_backward(np.ascontiguousarray(pooled_grad[:, :, :classes]), images, x[relu], references, r[relu],
                           block.constants["kernel"], *block.constants["pool_size"], totals[classes])
    assert np.abs(totals[2]).max() > 1e-2
    np.testing.assert_array_equal(totals[2], totals[3][..., :2])


def routed_with_branches(x_out, r_out, x_in, r_in) -> float:
    """shap's max-pool and ReLU rules for one window as first written, with branches: the factor, 0 where none."""
    scale = np.float32(x_out - r_out)
    if scale == 0:
        return 0.0
    delta = np.float32(max(x_in, np.float32(0)) - max(r_in, np.float32(0)))
    if abs(delta) < LINEAR_EPSILON:
        return 0.0
    delta_in = np.float32(x_in - r_in)
    if abs(delta_in) < NONLINEAR_EPSILON:
        relu = np.float32(1.0 if r_in > 0 else 0.0)
    else:
        relu = np.float32(delta / delta_in)
    return np.float64(scale) / np.float64(delta) * np.float64(relu)


def test_pair_factors_give_the_branching_rule_bit_for_bit():
    """The vectorised routing (selects, 16 lanes with AVX-512) against the rule with branches, one window at a
    time, on ReLU inputs drawn to hit every branch: equal maxima, all-negative windows, changes below both epsilons."""
    rng = np.random.default_rng(0)
    positions = 16 * 16 * 4  # conv outputs 16 x 16 x 4: 8 x 8 x 4 = 256 windows
    edges = np.float32([-1.5, -1e-8, 0.0, 1e-8, 5e-7, 0.25, 0.2500005])  # near 0 and near each other
    conv = [rng.choice(edges, positions) * (rng.random(positions) < 0.7)
            + (rng.random(positions) < 0.1) * rng.normal(size=positions).astype(np.float32) for _ in range(2)]
    routes = []
    for values in conv:
        conv_in = values.astype(np.float32).reshape(16, 16, 4)
        route = (np.empty(256, np.float32), np.empty(256, np.float32), np.empty(256, np.int64), np.empty(256, np.int64))
        window_routes(conv_in, 2, 2, *route)
        routes.append((conv_in, route))
    (image, (x_max, x_own, x_index, x_corner)), (reference, (r_max, r_own, r_index, r_corner)) = routes
    x_other, r_other = image.reshape(-1)[r_index], reference.reshape(-1)[x_index]
    factors, corner = np.empty(256), np.empty(256, np.int64)
    pair_factors(x_max, r_max, x_own, r_own, x_other, r_other, x_corner, r_corner, factors, corner)

    mine = x_max >= r_max
    x_in, r_in = np.where(mine, x_own, x_other), np.where(mine, r_other, r_own)
    expected = [routed_with_branches(*values) for values in zip(x_max, r_max, x_in, r_in)]
    changed, delta = x_max != r_max, np.maximum(x_in, 0) - np.maximum(r_in, 0)
    linear = changed & (np.abs(delta) >= LINEAR_EPSILON) & (np.abs(x_in - r_in) < NONLINEAR_EPSILON)
    # every branch taken: no change, a change below LINEAR_EPSILON, the ReLU's gradient (1 and 0), its rescale
    assert min((~changed).sum(), (changed & (np.abs(delta) < LINEAR_EPSILON)).sum(), (linear & (r_in > 0)).sum(),
               (linear & (r_in <= 0)).sum(), (changed & ~linear & (np.abs(delta) >= LINEAR_EPSILON)).sum()) > 0
    np.testing.assert_array_equal(factors, expected)
    np.testing.assert_array_equal(corner, np.where(mine, x_corner, r_corner))


@pytest.mark.parametrize("name", ["lab", "dropout and batch norm"])
def test_a_top_made_in_the_loop_gives_the_bytes_of_the_top_loop_then_the_block(name):
    """The lab's model runs its top inside the input block's loop, pair by pair, for every class or several head rules
    at once (the mixed rows); models with more between them, and fewer classes than logits, run the two loops apart.
    Both make each pair's multipliers by the same arithmetic: the same bytes."""
    model, background, images = stack(name, seed=14), random_images(11, (14, 14, 1), 15), random_images(3, (14, 14, 1), 16)
    explainer = Explainer(model, chunk_size=4)
    shapley = Explainer(model, softmax_rule="shapley").head
    top = explainer.network.top_over_input
    assert top is not None and top.loop.name == "top"

    def values() -> list[np.ndarray]:
        return [explainer.shap_values(images, background),
                explainer.explain((explainer.head, shapley), images, background, None)]

    in_the_loop = values()
    explainer.network.top_over_input = None
    apart = values()
    for made, expected in zip(in_the_loop, apart, strict=True):
        assert np.abs(expected).max() > 1e-3  # not zeros
        assert made.tobytes() == expected.tobytes()


def test_the_top_runs_in_the_input_blocks_loop_right_above_it_for_as_many_rows_as_logits():
    assert Network(stack("two conv blocks")).top_over_input is None  # a conv block between
    assert Network(stack("lab"), fuse=False).top_over_input is None
    explainer = Explainer(stack("lab"), chunk_size=4)  # 4 classes
    assert explainer.network.top_over_input is not None
    background, images, rows = random_images(5, (14, 14, 1), 17), random_images(2, (14, 14, 1), 18), []
    add_fused = explainer.add_fused
    explainer.add_fused = lambda *args: rows.append(args[5].shape[2]) or add_fused(*args)
    explainer.shap_values(images, background)
    assert rows == [4, 4]  # two chunks, each pair's 4 classes
    explainer.shap_values(images, background, np.array([[3, 1], [0, 2]]))
    assert rows == [4, 4]  # 2 classes of 4 logits: the two loops
