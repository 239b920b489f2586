"""The compiled loop of a conv block inside the model: the multipliers at the block's input, a reference per thread.

It replaces the plain rules of Conv2D (stride 1) -> [BatchNormalization] -> ReLU -> MaxPooling2D
(valid). It transposes the conv one conv output position at a time: the multipliers of the filters
routed there, (classes, filters), times the kernel's rows, (filters, kernel rows x columns x
channels), a small product summed eight rows a pass like the top's, then added into the input's
window. See deepshap.kernels on its determinism and cache.
"""

import numba
import numpy as np

from deepshap.kernels import add_rows, route_factor, window_maxima


def block_backward(grad: np.ndarray, image_pre_relu: np.ndarray, reference_pre_relu: np.ndarray, kernel: np.ndarray,
                   padding: tuple[int, int], pool_size: tuple[int, int], input_shape: tuple,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Return the multipliers at the input of a conv block inside the model, (refs, classes, *input_shape) float64.

    grad (refs, classes, pooled rows, pooled columns, filters) float64: the multipliers at the block's
    output. image_pre_relu (rows, columns, filters) and reference_pre_relu (refs, ...) float32: the
    ReLU's inputs. kernel (filters, kernel rows, kernel columns, channels) float64, of a stride-1 conv
    that pads (top, left) = padding. out: a float64 or float32 array of the result's size to write it in
    (its sums are float32: either holds them exactly), or None.
    """
    shape = grad.shape[:2] + tuple(input_shape)
    out = np.empty(shape) if out is None else out.reshape(shape)
    filters = kernel.shape[0]
    _inner_block(np.ascontiguousarray(grad).reshape(grad.shape[:2] + (-1,)), image_pre_relu, reference_pre_relu,
                 np.ascontiguousarray(kernel.reshape(filters, -1), dtype=np.float32), kernel.shape[2], *padding,
                 *pool_size, out)
    return out


@numba.njit(parallel=True, cache=True)
def _inner_block(grad, image, references, kernel_rows, kw, pad_top, pad_left, pool_rows, pool_columns, out):
    """block_backward's loop: the input block's rules, a reference per thread, so the sums do not
    depend on the thread count."""
    n, classes, _ = grad.shape
    rows, columns, channels = out.shape[2:]
    conv_rows, conv_columns, filters = image.shape
    qh, qw = conv_rows // pool_rows, conv_columns // pool_columns
    image_max = np.empty((qh, qw, filters), dtype=np.float32)
    image_at = np.empty((qh, qw, filters, 2), dtype=np.int32)
    window_maxima(image, pool_rows, pool_columns, image_max, image_at)
    for r in numba.prange(n):
        reference_max = np.empty((qh, qw, filters), dtype=np.float32)
        reference_at = np.empty((qh, qw, filters, 2), dtype=np.int32)
        window_maxima(references[r], pool_rows, pool_columns, reference_max, reference_at)
        routed_grad = np.empty((conv_rows * conv_columns, classes, filters), dtype=np.float32)
        used = np.empty((conv_rows * conv_columns, filters), dtype=np.int64)
        counts = np.empty(conv_rows * conv_columns, dtype=np.int64)
        _route(grad[r], image_max, image_at, reference_max, reference_at, image, references[r], conv_columns,
               routed_grad, used, counts)
        grad_in = np.zeros((rows, columns, classes, channels), dtype=np.float32)
        sums = np.empty((classes, kernel_rows.shape[1]), dtype=np.float32)
        _transpose_conv(routed_grad, used, counts, kernel_rows, kw, pad_top, pad_left, conv_columns, grad_in, sums)
        for c in range(classes):
            out[r, c] = grad_in[:, :, c, :]


@numba.njit(cache=True)
def _route(grad, image_max, image_at, reference_max, reference_at, image, reference, conv_columns, routed_grad, used,
           counts):
    """Route one pair's multipliers through the max-pool and ReLU rules to the conv's output.

    grad (classes, pooled rows x pooled columns x filters): the multipliers at the pool's output.
    Fills routed_grad (conv positions, classes, filters) float32, the multiplier at each position's
    ReLU input, where used[position, :counts[position]] lists the filters routed there (the other
    entries keep what they held: nothing reads them).
    """
    qh, qw, filters = image_max.shape
    counts[:] = 0
    for qi in range(qh):
        for qj in range(qw):
            for f in range(filters):
                x_out, r_out = image_max[qi, qj, f], reference_max[qi, qj, f]
                at = image_at if x_out >= r_out else reference_at
                i, j = at[qi, qj, f, 0], at[qi, qj, f, 1]
                factor = route_factor(x_out, r_out, image[i, j, f], reference[i, j, f])
                if factor == 0:
                    continue
                position = i * conv_columns + j
                used[position, counts[position]] = f
                counts[position] += 1
                p = (qi * qw + qj) * filters + f
                for c in range(grad.shape[0]):
                    routed_grad[position, c, f] = np.float32(grad[c, p] * factor)


@numba.njit(cache=True)
def _transpose_conv(routed_grad, used, counts, kernel_rows, kw, pad_top, pad_left, conv_columns, grad_in, sums):
    """Add to grad_in (rows, columns, classes, channels) float32 the conv's transpose of routed_grad.

    kernel_rows (filters, kernel rows x kernel columns x channels) float32; sums (classes, the same) a
    scratch array. Position by position: sums = routed_grad[position, :, used] @ kernel_rows[used], then
    added to the window of input positions the conv read there (those inside the input).
    """
    rows, columns, classes, channels = grad_in.shape
    kh = kernel_rows.shape[1] // (kw * channels)
    for position in range(len(counts)):
        if counts[position] == 0:
            continue
        sums[:] = 0
        add_rows(sums, routed_grad[position], kernel_rows, used[position], counts[position], 0, kernel_rows.shape[1])
        i, j = position // conv_columns, position % conv_columns
        for a in range(max(0, pad_top - i), min(kh, rows + pad_top - i)):
            for b in range(max(0, pad_left - j), min(kw, columns + pad_left - j)):
                at = (a * kw + b) * channels
                target = grad_in[i + a - pad_top, j + b - pad_left]
                for c in range(classes):
                    row, part = target[c], sums[c, at : at + channels]
                    for ch in range(channels):
                        row[ch] += part[ch]
