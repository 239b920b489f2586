"""The compiled loops of conv blocks: Conv2D -> [BatchNormalization] -> ReLU -> MaxPooling2D.

Given each class's multipliers at the max-pool output, they route them through shap's max-pool
rule, rescale them by the ReLU rule and transpose the conv (BatchNormalization's scale folded into
its kernel). These are the backward pass's largest tensors (26 x 26 x 32 per pair in the lab's
model), so each block runs as one loop rather than layer by layer:
- `pool_conv_backward`, the block at the model's input: it also multiplies by (image - reference)
  and sums over the references, pairing each reference with every image while the reference is in
  cache (measured: 13x faster than the generic rules on the lab's model).
- `block_backward`, a block inside the model: the multipliers at the block's input, a reference per
  thread (measured on a second block of 64 filters: the model's explanation 1.8x faster than with
  the generic rules and TensorFlow's float32 transposed conv, whose kernel depends on the CPU).

Deterministic on any CPU: float64 accumulation in a fixed order, no fastmath (which lets LLVM
reassociate sums by the host's vector width), and a fixed split of references into thread blocks.
"""

import numba
import numpy as np

from deepshap.head import LINEAR_EPSILON, NONLINEAR_EPSILON

THREAD_BLOCKS = 8  # blocks of references spread over the cores; fixed, so the thread count cannot change the sum


@numba.njit(inline="always")
def _window_max(conv_in, qi, qj, f, pool_rows, pool_columns):
    """Return the max-pool output of one window, relu applied, and the (row, column) of its first maximum.

    The first in row-major order: where TensorFlow's MaxPoolGrad, and so shap's max-pool rule,
    routes the gradient.
    """
    best = np.float32(-1.0)  # below every ReLU output
    row, column = 0, 0
    for i in range(qi * pool_rows, (qi + 1) * pool_rows):
        for j in range(qj * pool_columns, (qj + 1) * pool_columns):
            value = max(conv_in[i, j, f], np.float32(0.0))
            if value > best:
                best, row, column = value, i, j
    return best, row, column


@numba.njit(inline="always")
def _routed(x_out, r_out, x_i, x_j, r_i, r_j, image, reference, f):
    """Return shap's max-pool and ReLU rules for one window of filter f: (row, column, scale, delta, relu).

    The window's output multiplier goes to the ReLU input at (row, column), times scale / delta * relu:
    the output's change goes to the image's argmax if x_out >= r_out and to the reference's otherwise,
    divided there by the ReLU output's change, then the ReLU's rescale rule. scale is 0 where the
    rules give nothing (no change, or an input change below LINEAR_EPSILON).
    """
    scale = x_out - r_out
    if scale == 0:
        return 0, 0, scale, np.float32(1.0), np.float32(0.0)
    i, j = (x_i, x_j) if x_out >= r_out else (r_i, r_j)
    x_in, r_in = image[i, j, f], reference[i, j, f]
    delta = max(x_in, np.float32(0.0)) - max(r_in, np.float32(0.0))
    if abs(delta) < LINEAR_EPSILON:
        return i, j, np.float32(0.0), np.float32(1.0), np.float32(0.0)
    delta_in = x_in - r_in
    if abs(delta_in) < NONLINEAR_EPSILON:
        relu = np.float32(1.0) if r_in > 0 else np.float32(0.0)
    else:
        relu = np.float32(delta / delta_in)
    return i, j, scale, delta, relu


def pool_conv_backward(pooled_grad: np.ndarray, *args) -> None:
    """Run the compiled loop, built for the number of classes so its innermost loops have a fixed length.

    (measured: 1.4x faster than with the count read at run time.)
    """
    classes = pooled_grad.shape[2]
    if classes not in _KERNELS:
        _KERNELS[classes] = _make_pool_conv_backward(classes)
    _KERNELS[classes](pooled_grad, *args)


_KERNELS = {}


def _make_pool_conv_backward(classes):
    # cache: compiling takes 6 s; numba keeps the machine code in __pycache__, keyed by `classes` too.
    @numba.njit(parallel=True, cache=True)
    def fused_backward(pooled_grad, images, image_conv_in, references, reference_conv_in, kernel,
                           pool_rows, pool_columns, totals):
        """Add sum over references of multiplier * (image - reference) to totals (images, rows, columns, channels, classes).

        pooled_grad (images, references, classes, pooled rows * pooled columns * filters), float64,
        is each class's multiplier at the max-pool output. shap's max-pool rule sends it, times
        (x_out - r_out), to the image's argmax if x_out >= r_out and to the reference's otherwise,
        divided there by the difference of the pool inputs; the conv ReLU rule and the conv's
        transpose (kernel as (filters, kernel rows, kernel columns, channels)) follow. Each thread
        takes a block of references and pairs each with every image while it is in cache; classes
        are the innermost axis of the scatter, so its loops vectorise. The rule's factors are
        float32, as shap's; the multipliers and sums are float64.
        """
        count, rows, columns, channels = images.shape
        n = references.shape[0]
        filters, kh, kw, _ = kernel.shape
        qh, qw = (rows - kh + 1) // pool_rows, (columns - kw + 1) // pool_columns
        image_max = np.empty((count, qh, qw, filters), dtype=np.float32)
        image_at = np.empty((count, qh, qw, filters, 2), dtype=np.int32)  # (row, column) of each maximum
        for k in range(count):
            for qi in range(qh):
                for qj in range(qw):
                    for f in range(filters):
                        image_max[k, qi, qj, f], image_at[k, qi, qj, f, 0], image_at[k, qi, qj, f, 1] = _window_max(
                            image_conv_in[k], qi, qj, f, pool_rows, pool_columns)
        blocks = min(THREAD_BLOCKS, n)
        partial = np.zeros((blocks, count, rows, columns, channels, classes))
        for block in numba.prange(blocks):
            reference_max = np.empty((qh, qw, filters), dtype=np.float32)
            reference_at = np.empty((qh, qw, filters, 2), dtype=np.int32)
            grad_in = np.zeros((rows, columns, channels, classes))
            flat = grad_in.reshape(-1)
            value = np.zeros(classes)
            for r in range(block * n // blocks, (block + 1) * n // blocks):
                reference = reference_conv_in[r]
                for qi in range(qh):
                    for qj in range(qw):
                        for f in range(filters):
                            reference_max[qi, qj, f], reference_at[qi, qj, f, 0], reference_at[qi, qj, f, 1] = (
                                _window_max(reference, qi, qj, f, pool_rows, pool_columns))
                for k in range(count):
                    grad_in[:] = 0
                    image = image_conv_in[k]
                    grad = pooled_grad[k, r]
                    for qi in range(qh):
                        for qj in range(qw):
                            for f in range(filters):
                                i, j, scale, delta, relu = _routed(
                                    image_max[k, qi, qj, f], reference_max[qi, qj, f], image_at[k, qi, qj, f, 0],
                                    image_at[k, qi, qj, f, 1], reference_at[qi, qj, f, 0], reference_at[qi, qj, f, 1],
                                    image, reference, f)
                                if scale == 0:
                                    continue
                                p = (qi * qw + qj) * filters + f
                                for c in range(classes):
                                    value[c] = grad[c, p] * scale / delta * relu
                                for a in range(kh):
                                    for b in range(kw):
                                        for ch in range(channels):
                                            weight = kernel[f, a, b, ch]
                                            base = (((i + a) * columns + j + b) * channels + ch) * classes
                                            for c in range(classes):
                                                flat[np.uint64(base + c)] += weight * value[c]
                    for i in range(rows):
                        for j in range(columns):
                            for ch in range(channels):
                                difference = images[k, i, j, ch] - references[r, i, j, ch]
                                for c in range(classes):
                                    partial[block, k, i, j, ch, c] += grad_in[i, j, ch, c] * difference
        for block in range(blocks):
            totals += partial[block]
    return fused_backward


def block_backward(grad: np.ndarray, image_pre_relu: np.ndarray, reference_pre_relu: np.ndarray, kernel: np.ndarray,
                   padding: tuple[int, int], pool_size: tuple[int, int], input_shape: tuple) -> np.ndarray:
    """Return the multipliers at the input of a conv block inside the model, (refs, classes, *input_shape) float64.

    grad (refs, classes, pooled rows, pooled columns, filters) float64: the multipliers at the block's
    output. image_pre_relu (rows, columns, filters) and reference_pre_relu (refs, ...) float32: the
    ReLU's inputs. kernel (filters, kernel rows, kernel columns, channels) float64, of a stride-1 conv
    that pads (top, left) = padding.
    """
    classes = grad.shape[1]
    if classes not in _BLOCK_KERNELS:
        _BLOCK_KERNELS[classes] = _make_block_backward(classes)
    out = np.empty(grad.shape[:2] + tuple(input_shape))
    _BLOCK_KERNELS[classes](np.ascontiguousarray(grad), image_pre_relu, reference_pre_relu, kernel, *padding,
                            *pool_size, out)
    return out


_BLOCK_KERNELS = {}


def _make_block_backward(classes):
    @numba.njit(parallel=True, cache=True)
    def inner_block_backward(grad, image, references, kernel, pad_top, pad_left, pool_rows, pool_columns, out):
        """Write to out (refs, classes, rows, columns, channels) each reference's multipliers at the block's input.

        The same rules, in the same order, as the input block's loop; a reference per thread, so the
        sums do not depend on the thread count.
        """
        n, _, qh, qw, filters = grad.shape
        rows, columns, channels = out.shape[2:]
        _, kh, kw, _ = kernel.shape
        image_max = np.empty((qh, qw, filters), dtype=np.float32)
        image_at = np.empty((qh, qw, filters, 2), dtype=np.int32)
        for qi in range(qh):
            for qj in range(qw):
                for f in range(filters):
                    image_max[qi, qj, f], image_at[qi, qj, f, 0], image_at[qi, qj, f, 1] = _window_max(
                        image, qi, qj, f, pool_rows, pool_columns)
        for r in numba.prange(n):
            reference = references[r]
            grad_in = np.zeros(rows * columns * classes * channels)  # (rows, columns, classes, channels)
            value = np.zeros(classes)
            for qi in range(qh):
                for qj in range(qw):
                    for f in range(filters):
                        r_out, r_i, r_j = _window_max(reference, qi, qj, f, pool_rows, pool_columns)
                        i, j, scale, delta, relu = _routed(image_max[qi, qj, f], r_out, image_at[qi, qj, f, 0],
                                                           image_at[qi, qj, f, 1], r_i, r_j, image, reference, f)
                        if scale == 0:
                            continue
                        for c in range(classes):
                            value[c] = grad[r, c, qi, qj, f] * scale / delta * relu
                        for a in range(max(0, pad_top - i), min(kh, rows + pad_top - i)):
                            for b in range(max(0, pad_left - j), min(kw, columns + pad_left - j)):
                                base = ((i + a - pad_top) * columns + j + b - pad_left) * classes * channels
                                for c in range(classes):
                                    at = base + c * channels
                                    v = value[c]
                                    # An unsigned index: NumPy's wraparound of negative ones would keep LLVM from vectorising.
                                    for ch in range(channels):
                                        grad_in[np.uint64(at + ch)] += kernel[f, a, b, ch] * v
            for c in range(classes):
                for y in range(rows):
                    for x in range(columns):
                        at = ((y * columns + x) * classes + c) * channels
                        for ch in range(channels):
                            out[r, c, y, x, ch] = grad_in[at + ch]
    return inner_block_backward

