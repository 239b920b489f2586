"""The pooling rules: shap's for MaxPooling2D, which routes each window's change to its argmax, and
AveragePooling2D's, the transpose of the map.

Windows do not overlap (deepshap.support lets through only strides equal to the pool size), so each
input position belongs to one window at most; 'same' padding pads as TensorFlow does, the odd
position at the bottom and right.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from deepshap.head import LINEAR_EPSILON, where_close


class Windows(NamedTuple):
    """A pooling layer's windows over one image: the pool's size, the input's, the output's and the padding's."""

    pool_rows: int
    pool_columns: int
    rows: int
    columns: int
    channels: int
    out_rows: int
    out_columns: int
    top: int  # padded positions above the input
    left: int  # and to its left

    @classmethod
    def of(cls, step) -> "Windows":
        (pool_rows, pool_columns), (rows, columns, channels) = step.layer.pool_size, step.input_shape
        out_rows, out_columns = step.output_shape[:2]
        top, left = max(out_rows * pool_rows - rows, 0) // 2, max(out_columns * pool_columns - columns, 0) // 2
        return cls(pool_rows, pool_columns, rows, columns, channels, out_rows, out_columns, top, left)


def max_pool(step, grad: np.ndarray, image: np.ndarray, references: np.ndarray) -> np.ndarray:
    # (refs, classes, out rows, out columns, channels) -> (refs, classes, rows, columns, channels): each window's
    # multiplier times the factors of its positions, written in one pass through a (out rows, pool rows,
    # out columns, pool columns) view of the (padded) input.
    w = Windows.of(step)
    covered_rows, covered_columns = w.out_rows * w.pool_rows, w.out_columns * w.pool_columns  # by the windows
    big = (max(w.rows, covered_rows), max(w.columns, covered_columns), w.channels)
    refs, classes = grad.shape[:2]
    factors = np.zeros((refs,) + big)
    factors[:, w.top : w.top + w.rows, w.left : w.left + w.columns] = input_factors(w, image, references)
    result = np.zeros((refs, classes) + big)
    covered = (w.out_rows, w.pool_rows, w.out_columns, w.pool_columns, w.channels)
    block = result[:, :, :covered_rows, :covered_columns].reshape((refs, classes) + covered)
    factor_block = factors[:, np.newaxis, :covered_rows, :covered_columns].reshape((refs, 1) + covered)
    np.multiply(grad[:, :, :, np.newaxis, :, np.newaxis], factor_block, out=block)
    return result[:, :, w.top : w.top + w.rows, w.left : w.left + w.columns]


def input_factors(w: Windows, image: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Return, per reference and input position, what multiplies the multiplier of its window's output.

    shap's rule: the output's change is split in max(xo, ro) - ro, routed to the image's argmax, and
    xo - max(xo, ro), routed to the reference's (TensorFlow's first argmax), each then divided by
    the input's change there (zero where it is below 1e-7). Windows do not overlap, so each input
    position takes one window's multiplier: (references, rows, columns, channels) float64.
    """
    x_windows, r_windows = windows(w, image[np.newaxis]), windows(w, references)
    x_out, r_out = x_windows.max(axis=-1), r_windows.max(axis=-1)  # (1 or refs, out rows, out columns, channels)
    cross = np.maximum(x_out, r_out)
    positions = np.arange(x_windows.shape[-1])
    to_image = (positions == x_windows.argmax(axis=-1)[..., np.newaxis]) * (cross - r_out)[..., np.newaxis]
    to_reference = (positions == r_windows.argmax(axis=-1)[..., np.newaxis]) * (x_out - cross)[..., np.newaxis]
    routed = unwindow(w, (to_image + to_reference).astype(np.float64))
    delta = (image[np.newaxis] - references).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return where_close(delta, LINEAR_EPSILON, 0.0, routed / delta)


def windows(w: Windows, values: np.ndarray) -> np.ndarray:
    """Return values (n, rows, columns, channels) as (n, out rows, out columns, channels, window) windows,
    'same' padding padded with -inf as TensorFlow does."""
    pr, pc, n = w.pool_rows, w.pool_columns, len(values)
    padded = np.full((n, w.out_rows * pr, w.out_columns * pc, w.channels), -np.inf, dtype=values.dtype)
    padded[:, w.top : w.top + w.rows, w.left : w.left + w.columns] = values[:, : w.out_rows * pr, : w.out_columns * pc]
    shaped = padded.reshape(n, w.out_rows, pr, w.out_columns, pc, w.channels)
    return shaped.transpose(0, 1, 3, 5, 2, 4).reshape(n, w.out_rows, w.out_columns, w.channels, pr * pc)


def unwindow(w: Windows, values: np.ndarray) -> np.ndarray:
    """Return window-shaped values (n, out rows, out columns, channels, window) in the input's layout."""
    pr, pc, n = w.pool_rows, w.pool_columns, len(values)
    shaped = values.reshape(n, w.out_rows, w.out_columns, w.channels, pr, pc).transpose(0, 1, 4, 2, 5, 3)
    padded = shaped.reshape(n, w.out_rows * pr, w.out_columns * pc, w.channels)
    result = np.zeros((n, w.rows, w.columns, w.channels), dtype=values.dtype)
    kept_rows, kept_columns = min(w.rows, w.out_rows * pr), min(w.columns, w.out_columns * pc)
    result[:, :kept_rows, :kept_columns] = padded[:, w.top : w.top + kept_rows, w.left : w.left + kept_columns]
    return result


def average_pool(step, grad: np.ndarray, image: None, references: None) -> np.ndarray:
    # (refs, classes, out rows, out columns, channels) -> (refs, classes, rows, columns, channels): TensorFlow's
    # gradient of the average, in float64.
    batch = grad.shape[:2]
    zeros = tf.zeros((int(np.prod(batch)),) + step.input_shape, dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        pooled = tf.nn.avg_pool2d(zeros, step.layer.pool_size, step.layer.strides, step.layer.padding.upper())
    flat = grad.reshape((-1,) + grad.shape[2:])
    return tape.gradient(pooled, zeros, output_gradients=tf.constant(flat)).numpy().reshape(batch + step.input_shape)
