"""The compiled loops: conv blocks, Conv2D -> [BatchNormalization] -> ReLU -> MaxPooling2D, and the model's top.

Given each class's multipliers at the max-pool output, a block routes them through shap's max-pool
rule, rescales them by the ReLU rule and transposes the conv (BatchNormalization's scale folded into
its kernel). These are the backward pass's largest tensors (26 x 26 x 32 per pair in the lab's
model), so each block runs as one loop rather than layer by layer:
- `pool_conv_backward`, the block at the model's input: it also multiplies by (image - reference)
  and sums over the references, pairing each reference with every image while the reference is in
  cache. Each routed multiplier goes straight into its input window, its classes padded to whole
  vectors.
- `block_backward`, a block inside the model: the multipliers at the block's input, a reference per
  thread. It transposes the conv one conv output position at a time: the multipliers of the
  filters routed there, (classes, filters), times the kernel's rows, (filters, kernel rows x
  columns x channels), a small product summed eight rows a pass like the top's, then added into
  the input's window.
- `dense_top_backward`, the model's top, Dense -> ReLU -> the head's Dense: see there.

Deterministic on any CPU: sums in a fixed order, each product and sum rounded as written (fma is one
rounding on every CPU; no fastmath, which lets LLVM reassociate sums by the host's vector width and
fuse a * b + c where the CPU can), and a fixed split of references into thread blocks. The
multipliers inside a pair are float32, as in shap; the sums over references float64.
"""

import numba
import numpy as np
from llvmlite import ir
from numba.extending import intrinsic

from deepshap.head import LINEAR_EPSILON, NONLINEAR_EPSILON

THREAD_BLOCKS = 8  # blocks of references spread over the cores; fixed, so the thread count cannot change the sum
TILE = 256  # positions of the top's rows taken at once: 8 rows and the (classes, TILE) sums stay in L1
LANES = 8  # float32 values in a vector of the narrowest AVX unit: the input block pads classes to a multiple


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once: LLVM's fma, one instruction where the CPU has it, and the same bits where
    it has not (then a library call). Plain a * b + c may or may not be fused, by CPU: fastmath's
    'contract', which this project leaves off."""
    def codegen(context, builder, signature, args):
        kind = args[0].type
        return builder.call(builder.module.declare_intrinsic("llvm.fma", [kind], ir.FunctionType(kind, [kind] * 3)),
                            args)
    return a(a, b, c), codegen


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


@numba.njit(cache=True)
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


@numba.njit(cache=True)
def _window_maxima(conv_in, pool_rows, pool_columns, maxima, at):
    """Fill maxima (pooled rows, pooled columns, filters) and at (..., 2) with each window's _window_max."""
    qh, qw, filters = maxima.shape
    for qi in range(qh):
        for qj in range(qw):
            for f in range(filters):
                maxima[qi, qj, f], at[qi, qj, f, 0], at[qi, qj, f, 1] = _window_max(conv_in, qi, qj, f, pool_rows,
                                                                                     pool_columns)


@numba.njit(cache=True)
def _route(grad, image_max, image_at, reference_max, reference_at, image, reference, conv_columns, routed, used,
           counts):
    """Route one pair's multipliers through the max-pool and ReLU rules to the conv's output.

    grad (classes, pooled rows x pooled columns x filters): the multipliers at the pool's output.
    Fills routed (conv positions, classes, filters) float32, the multiplier at each position's ReLU
    input, where used[position, :counts[position]] lists the filters routed there (the other
    entries keep what they held: nothing reads them).
    """
    qh, qw, filters = image_max.shape
    counts[:] = 0
    for qi in range(qh):
        for qj in range(qw):
            for f in range(filters):
                i, j, scale, delta, relu = _routed(image_max[qi, qj, f], reference_max[qi, qj, f], image_at[qi, qj, f, 0],
                                                   image_at[qi, qj, f, 1], reference_at[qi, qj, f, 0],
                                                   reference_at[qi, qj, f, 1], image, reference, f)
                if scale == 0:
                    continue
                position = i * conv_columns + j
                used[position, counts[position]] = f
                counts[position] += 1
                factor = np.float64(scale) / delta * relu  # one division, not one per class
                p = (qi * qw + qj) * filters + f
                for c in range(grad.shape[0]):
                    routed[position, c, f] = np.float32(grad[c, p] * factor)


@numba.njit(cache=True)
def _transpose_conv(routed, used, counts, kernel_rows, kw, pad_top, pad_left, conv_columns, grad_in, sums):
    """Add to grad_in (rows, columns, classes, channels) float32 the conv's transpose of routed.

    kernel_rows (filters, kernel rows x kernel columns x channels) float32; sums (classes, the same) a
    scratch array. Position by position: sums = routed[position, :, used] @ kernel_rows[used], then
    added to the window of input positions the conv read there (those inside the input).
    """
    rows, columns, classes, channels = grad_in.shape
    kh = kernel_rows.shape[1] // (kw * channels)
    for position in range(len(counts)):
        if counts[position] == 0:
            continue
        sums[:] = 0
        _add_rows(sums, routed[position], kernel_rows, used[position], counts[position], 0, kernel_rows.shape[1])
        i, j = position // conv_columns, position % conv_columns
        for a in range(max(0, pad_top - i), min(kh, rows + pad_top - i)):
            for b in range(max(0, pad_left - j), min(kw, columns + pad_left - j)):
                at = (a * kw + b) * channels
                target = grad_in[i + a - pad_top, j + b - pad_left]
                for c in range(classes):
                    row, part = target[c], sums[c, at : at + channels]
                    for ch in range(channels):
                        row[ch] += part[ch]


def pool_conv_backward(pooled_grad: np.ndarray, images: np.ndarray, image_conv_in: np.ndarray, references: np.ndarray,
                       reference_conv_in: np.ndarray, kernel: np.ndarray, pool_rows: int, pool_columns: int,
                       totals: np.ndarray) -> None:
    """Add sum over references of multiplier * (image - reference) to totals (images, rows, columns, channels, classes).

    pooled_grad (images, references, classes, pooled rows x pooled columns x filters) float64: each
    class's multiplier at the max-pool output. image_conv_in (images, conv rows, conv columns, filters)
    and reference_conv_in (references, ...) float32: the ReLU's inputs. kernel (filters, kernel rows,
    kernel columns, channels) of a valid, stride-1 conv.

    The loop is compiled for the kernel's shape, so that its window's loops have fixed lengths
    (measured: 1.5x faster than with them read at run time).
    """
    key = kernel.shape[1:]
    if key not in _POOL_CONV:
        _POOL_CONV[key] = _make_pool_conv(*key)
    _POOL_CONV[key](pooled_grad, _read_only(images), image_conv_in, _read_only(references), reference_conv_in,
                    kernel.astype(np.float32), pool_rows, pool_columns, totals)


def _read_only(array: np.ndarray) -> np.ndarray:
    """Return a read-only view of array. numba compiles a loop again for each new argument type, and
    read-only is part of an array's type: the images and references come from the caller, read-only
    from Ray's object store or np.load(mmap_mode="r") and writable elsewhere, so passed read-only
    always, one compiled loop serves both (it took 7-9 s to compile a second one)."""
    view = array.view()
    view.flags.writeable = False
    return view


_POOL_CONV = {}


def _make_pool_conv(kh, kw, channels):
    # cache: numba keeps the machine code in __pycache__, keyed by the closure's values too.
    @numba.njit(parallel=True, cache=True)
    def pool_conv(pooled_grad, images, image_conv_in, references, reference_conv_in, kernel, pool_rows, pool_columns,
                  totals):
        """pool_conv_backward's loop. Each thread takes a block of references and pairs each with every
        image while it is in cache; partial sums per block, added in block order. Window by window,
        filter by filter, each routed multiplier goes straight into the input's window."""
        count, rows, columns, _ = images.shape
        n, conv_rows, conv_columns, filters = reference_conv_in.shape
        classes = pooled_grad.shape[2]
        qh, qw = conv_rows // pool_rows, conv_columns // pool_columns
        image_max = np.empty((count, qh, qw, filters), dtype=np.float32)
        image_at = np.empty((count, qh, qw, filters, 2), dtype=np.int32)  # (row, column) of each maximum
        for k in range(count):
            _window_maxima(image_conv_in[k], pool_rows, pool_columns, image_max[k], image_at[k])
        blocks = min(THREAD_BLOCKS, n)
        partial = np.zeros((blocks, count, rows, columns, channels, classes))
        lanes = -(-classes // LANES) * LANES  # each input position's multipliers, padded to whole vectors
        for block in numba.prange(blocks):
            reference_max = np.empty((qh, qw, filters), dtype=np.float32)
            reference_at = np.empty((qh, qw, filters, 2), dtype=np.int32)
            grad_in = np.zeros((rows, columns, channels, lanes), dtype=np.float32)
            flat = grad_in.reshape(-1)
            value = np.zeros(lanes, dtype=np.float32)
            for r in range(block * n // blocks, (block + 1) * n // blocks):
                reference = reference_conv_in[r]
                _window_maxima(reference, pool_rows, pool_columns, reference_max, reference_at)
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
                                factor = np.float64(scale) / delta * relu  # one division, not one per class
                                for c in range(classes):
                                    value[c] = np.float32(grad[c, p] * factor)
                                for a in range(kh):
                                    for b in range(kw):
                                        for ch in range(channels):
                                            weight = kernel[f, a, b, ch]
                                            # An unsigned index: NumPy's wraparound of negative ones keeps LLVM from vectorising.
                                            base = (((i + a) * columns + j + b) * channels + ch) * lanes
                                            for c in range(lanes):
                                                flat[np.uint64(base + c)] = _fma(weight, value[c], flat[np.uint64(base + c)])
                    for i in range(rows):
                        for j in range(columns):
                            for ch in range(channels):
                                difference = np.float64(images[k, i, j, ch] - references[r, i, j, ch])
                                for c in range(classes):
                                    partial[block, k, i, j, ch, c] += grad_in[i, j, ch, c] * difference
        for block in range(blocks):
            totals += partial[block]
    return pool_conv


def block_backward(grad: np.ndarray, image_pre_relu: np.ndarray, reference_pre_relu: np.ndarray, kernel: np.ndarray,
                   padding: tuple[int, int], pool_size: tuple[int, int], input_shape: tuple,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Return the multipliers at the input of a conv block inside the model, (refs, classes, *input_shape) float64.

    grad (refs, classes, pooled rows, pooled columns, filters) float64: the multipliers at the block's
    output. image_pre_relu (rows, columns, filters) and reference_pre_relu (refs, ...) float32: the
    ReLU's inputs. kernel (filters, kernel rows, kernel columns, channels) float64, of a stride-1 conv
    that pads (top, left) = padding. out: a float64 array of the result's size to write it in, or None.
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
    _window_maxima(image, pool_rows, pool_columns, image_max, image_at)
    for r in numba.prange(n):
        reference_max = np.empty((qh, qw, filters), dtype=np.float32)
        reference_at = np.empty((qh, qw, filters, 2), dtype=np.int32)
        _window_maxima(references[r], pool_rows, pool_columns, reference_max, reference_at)
        routed = np.empty((conv_rows * conv_columns, classes, filters), dtype=np.float32)
        used = np.empty((conv_rows * conv_columns, filters), dtype=np.int64)
        counts = np.empty(conv_rows * conv_columns, dtype=np.int64)
        _route(grad[r], image_max, image_at, reference_max, reference_at, image, references[r], conv_columns, routed,
               used, counts)
        grad_in = np.zeros((rows, columns, classes, channels), dtype=np.float32)
        sums = np.empty((classes, kernel_rows.shape[1]), dtype=np.float32)
        _transpose_conv(routed, used, counts, kernel_rows, kw, pad_top, pad_left, conv_columns, grad_in, sums)
        for c in range(classes):
            out[r, c] = grad_in[:, :, c, :]


def dense_top_backward(grad: np.ndarray, on: np.ndarray, rule: np.ndarray, hidden: np.ndarray, head: np.ndarray,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Return the multipliers at the input of the model's top, Dense -> ReLU -> the head's Dense, (refs, classes, inputs).

    grad (refs, classes, logits) float64: the head rule's multipliers for one image. on (units,) bool:
    the image's units that are on; rule (refs, units) float64: the ReLU rule per reference. hidden
    (units, inputs) float32 and head (logits, units) float64: the two Dense kernels, transposed.
    out: a float64 array of the result's shape to write it in, or None for a new one.

    The generic rules make (grad @ head * rule) @ hidden, one product of (refs x classes, units) by
    (units, inputs): most of the lab's time. The ReLU rule is exactly 1 where the image's unit and the
    reference's are both on, and 0 where both are off, so it splits into the image's on units, the same
    for every reference, and a part that is nonzero only on the units where the two differ (87 of 256
    per pair on the lab's data):
        grad @ (head[:, on] @ hidden[on])  +  ((grad @ head) * (rule - on)) @ hidden,
    the first a product with a (logits, inputs) matrix made once per image, the second summed over each
    reference's differing units alone. Summed in float32 with fma, in a fixed order (shap's own values
    are float32 throughout); float64 out.
    """
    differs = rule - on  # (refs, units): exactly zero where the rule is 1 and the unit on, or 0 and off
    # (logits, inputs), the image's alone: made again for each chunk of references, as keeping one per
    # image across chunks would hold 216 KB an image (the lab's), 2 GB for 10,000 images at once.
    image_rows = (head[:, on] @ hidden[on].astype(np.float64)).astype(np.float32)
    unit_coefficients = ((grad @ head) * differs[:, np.newaxis]).astype(np.float32)  # (refs, classes, units)
    if out is None:
        out = np.empty(grad.shape[:2] + (hidden.shape[1],))
    _dense_top(np.ascontiguousarray(grad, dtype=np.float32), image_rows, unit_coefficients, hidden, differs != 0, out)
    return out


@numba.njit(cache=True)
def _add_rows(sums, coefficients, rows, used, count, start, stop):
    """Add to sums (classes, stop - start) coefficients[c, used[t]] * rows[used[t], start:stop] for t < count, in order.

    Eight rows a pass, so each sum is loaded and stored once per eight products; a last pass of fewer
    adds zeros for the rest (0 * a finite number, exactly). Indices count from 0 within the tile: LLVM
    vectorises only loops whose indices it knows are not negative.
    """
    width = stop - start
    zero = np.float32(0.0)  # sums, coefficients and rows are float32
    for t in range(0, count, 8):
        u0 = used[t]
        u1, u2, u3 = _or_first(used, t + 1, count), _or_first(used, t + 2, count), _or_first(used, t + 3, count)
        u4, u5, u6, u7 = (_or_first(used, t + 4, count), _or_first(used, t + 5, count), _or_first(used, t + 6, count),
                          _or_first(used, t + 7, count))
        r0, r1, r2, r3 = rows[u0, start:stop], rows[u1, start:stop], rows[u2, start:stop], rows[u3, start:stop]
        r4, r5, r6, r7 = rows[u4, start:stop], rows[u5, start:stop], rows[u6, start:stop], rows[u7, start:stop]
        for c in range(sums.shape[0]):
            a0 = coefficients[c, u0]
            a1 = coefficients[c, u1] if t + 1 < count else zero
            a2 = coefficients[c, u2] if t + 2 < count else zero
            a3 = coefficients[c, u3] if t + 3 < count else zero
            a4 = coefficients[c, u4] if t + 4 < count else zero
            a5 = coefficients[c, u5] if t + 5 < count else zero
            a6 = coefficients[c, u6] if t + 6 < count else zero
            a7 = coefficients[c, u7] if t + 7 < count else zero
            row = sums[c]
            for q in range(width):
                s = _fma(a0, r0[q], row[q])
                s = _fma(a1, r1[q], s)
                s = _fma(a2, r2[q], s)
                s = _fma(a3, r3[q], s)
                s = _fma(a4, r4[q], s)
                s = _fma(a5, r5[q], s)
                s = _fma(a6, r6[q], s)
                row[q] = _fma(a7, r7[q], s)


@numba.njit(inline="always")
def _or_first(used, t, count):
    """Return used[t], or used[0] past the count (a row that a zero coefficient then multiplies)."""
    return used[t] if t < count else used[0]


@numba.njit(parallel=True, cache=True)
def _dense_top(grad, image_rows, unit_coefficients, hidden, differs, out):
    """Write out[r, c] = grad[r, c] @ image_rows + unit_coefficients[r, c, used] @ hidden[used], a tile at a time,
    used the units where differs[r] is true.

    References are independent: any thread count gives the same bytes.
    """
    refs, classes, logits = grad.shape
    inputs = hidden.shape[1]
    all_logits = np.arange(logits)
    for r in numba.prange(refs):
        used = np.flatnonzero(differs[r])
        sums = np.empty((classes, TILE), dtype=np.float32)
        for start in range(0, inputs, TILE):
            stop = min(inputs, start + TILE)
            sums[:] = 0
            _add_rows(sums, grad[r], image_rows, all_logits, logits, start, stop)
            _add_rows(sums, unit_coefficients[r], hidden, used, len(used), start, stop)
            out[r, :, start:stop] = sums[:, : stop - start]
