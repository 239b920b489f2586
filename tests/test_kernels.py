"""kernels: what the compiled loops share rounds as written, sums in order and routes ties as TensorFlow does."""

import numba
import numpy as np
import pytest

from deepshap.kernels import (
    BLOCKS,
    CACHE_LINE,
    VECTOR,
    add_rows,
    add_tile,
    aligned,
    aligned_empty,
    fma,
    window_maxima,
)


@numba.njit(cache=True)
def fused_multiply_add(a, b, c):
    return fma(a, b, c)


def test_fma_rounds_once_on_every_cpu():
    a, c = np.float32(1 + 2**-12), np.float32(-(1 + 2**-11))
    # a * a = 1 + 2^-11 + 2^-24 exactly: rounded to float32 first, the 2^-24 is lost.
    assert a * a + c == 0
    assert fused_multiply_add(a, a, c) == np.float32(2**-24)


@pytest.mark.parametrize("offset", [0, 8, 16, 32])
def test_aligned_puts_the_same_values_on_a_cache_line(offset):
    rows = np.arange(3 * 40, dtype=np.float64).reshape(3, 40) / 7
    line = aligned_empty((rows.nbytes + CACHE_LINE,), np.uint8)
    placed = line[offset : offset + rows.nbytes].view(np.float64).reshape(rows.shape)  # offset bytes past a line
    placed[...] = rows
    for dtype in (np.float32, None):  # float64 rows rounded to float32 (the top's kernel), or kept as they are
        out = aligned(placed, dtype)
        assert out.ctypes.data % CACHE_LINE == 0 and out.flags.c_contiguous
        assert out.dtype == (np.float32 if dtype else np.float64)
        np.testing.assert_array_equal(out, rows.astype(out.dtype))
    assert (aligned(placed, None) is placed) == (offset == 0)  # a copy only where the rows start mid-line
    transposed = aligned(placed.T, None)  # not C-contiguous: copied
    assert transposed.ctypes.data % CACHE_LINE == 0 and transposed.flags.c_contiguous
    np.testing.assert_array_equal(transposed, rows.T)


def test_add_rows_sums_the_chosen_rows_of_a_tile():
    rng = np.random.default_rng(0)
    coefficients = rng.normal(size=(3, 12)).astype(np.float32)  # (classes, rows)
    rows = rng.normal(size=(12, 40)).astype(np.float32)
    used = np.array([11, 0, 4, 5, 7, 2, 9, 3, 8, 1], dtype=np.int64)  # ten: a pass of eight, then one of two
    sums = np.zeros((3, 30), dtype=np.float32)
    add_rows(sums, coefficients, rows, used, len(used), 5, 35)
    expected = coefficients[:, used].astype(np.float64) @ rows[used, 5:35]
    np.testing.assert_allclose(sums, expected, rtol=0, atol=1e-6 * np.abs(expected).max())  # float32 sums


@numba.njit(cache=True)
def fma_in_row_order(sums, coefficients, rows, used, start, stop):
    """add_rows' sums made one fma at a time, each sum over the used rows in order."""
    for c in range(sums.shape[0]):
        for q in range(stop - start):
            for u in used:
                sums[c, q] = fma(coefficients[c, u], rows[u, start + q], sums[c, q])


@pytest.mark.parametrize("classes", [1, 2, 5])  # alone, a pair, pairs and one alone
def test_add_rows_rounds_each_sum_as_one_fma_a_row_in_order(classes):
    rng = np.random.default_rng(classes)
    coefficients = rng.normal(size=(classes, 20)).astype(np.float32)
    rows = rng.normal(size=(20, 50)).astype(np.float32)
    used = rng.permutation(20)[:13]  # a pass of eight, then one of five padded with zeros
    sums, expected = (rng.normal(size=(classes, 40)).astype(np.float32) for _ in range(2))
    expected[:] = sums
    add_rows(sums, coefficients, rows, used, len(used), 3, 43)
    fma_in_row_order(expected, coefficients, rows, used, 3, 43)
    np.testing.assert_array_equal(sums, expected)  # bit for bit: the same bytes on any CPU


@numba.njit(cache=True)
def tile_sums(sums, coefficients, rows, used, count, start, stop):
    add_tile(sums, coefficients, rows, used, count, start, stop)


# Blocks of 5, 2 and 1 classes, each with whole blocks of columns and add_rows' columns past them.
@pytest.mark.parametrize("classes", [1, 2, 3, 7, 10])
def test_add_tile_rounds_each_sum_as_one_fma_a_row_in_order(classes):
    rng = np.random.default_rng(classes)
    columns = 2 * BLOCKS[1] * VECTOR + 5
    coefficients = rng.normal(size=(classes, 30)).astype(np.float32)
    coefficients[:, 4] = 0  # a zero coefficient adds nothing, in a block or in add_rows
    rows = rng.normal(size=(30, columns + 9)).astype(np.float32)
    used = rng.permutation(30)[:21]
    sums = np.zeros((classes, columns), dtype=np.float32)  # the top's sums start at +0
    expected = sums.copy()
    tile_sums(sums, coefficients, rows, used, len(used), 9, columns + 9)
    fma_in_row_order(expected, coefficients, rows, used, 9, columns + 9)
    assert np.abs(sums).min() > 0  # every column was summed
    np.testing.assert_array_equal(sums, expected)  # bit for bit: the same bytes on any CPU


def test_window_maxima_take_the_first_maximum_after_relu():
    conv_in = np.array([[-1.0, -2.0, 5.0, 1.0], [-3.0, -0.5, 5.0, 5.0]], dtype=np.float32)[:, :, np.newaxis]
    maxima, at = np.empty((1, 2, 1), dtype=np.float32), np.empty((1, 2, 1, 2), dtype=np.int32)
    window_maxima(conv_in, 2, 2, maxima, at)
    np.testing.assert_array_equal(maxima[0, :, 0], [0.0, 5.0])  # all negative: relu's 0, at the first position
    np.testing.assert_array_equal(at[0, :, 0], [[0, 0], [0, 2]])
