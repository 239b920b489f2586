"""The compiled loop of the conv block at the model's input, fused with (image - reference) and the sum over references.

It replaces the plain rules of Conv2D (valid, stride 1) -> [BatchNormalization] -> ReLU ->
MaxPooling2D (valid) and the final sum over references of multiplier * (image - reference),
pairing each reference with every image while the reference is in cache. Each routed multiplier
goes straight into its input window, its classes padded to whole vectors. Where more rows are
explained than the model has logits (several head rules at once), the block runs each logit's
unit row and mixes them at the input, per pair, by the head's multipliers: the backward is linear
in them. See deepshap.kernels on its determinism and cache.
"""

import numba
import numpy as np

from deepshap.kernels import LANES, THREAD_BLOCKS, fma, fma_lanes, routed, window_maxima


def pool_conv_backward(pooled_grad: np.ndarray, images: np.ndarray, image_conv_in: np.ndarray, references: np.ndarray,
                       reference_conv_in: np.ndarray, kernel: np.ndarray, pool_rows: int, pool_columns: int,
                       totals: np.ndarray, mix: np.ndarray | None = None) -> None:
    """Add sum over references of multiplier * (image - reference) to totals (images, rows, columns, channels, classes).

    pooled_grad (images, references, classes, pooled rows x pooled columns x filters) float64 or float32: each
    class's multiplier at the max-pool output. image_conv_in (images, conv rows, conv columns, filters)
    and reference_conv_in (references, ...) float32: the ReLU's inputs. kernel (filters, kernel rows,
    kernel columns, channels) of a stride-1 conv that pads nothing.
    mix: None, or (images, references, classes, logits) float64: the head's multipliers of each class
    with respect to the logits, pooled_grad then holding each logit's own rows (images, references,
    logits, ...): a class's multiplier at an input is its row of mix times the logits' there.

    The loop is compiled for the kernel's shape, so that its window's loops have fixed lengths
    (measured: 1.5x faster than with them read at run time).
    """
    key = kernel.shape[1:]
    if key not in POOL_CONV:
        POOL_CONV[key] = _make_pool_conv(*key)
    POOL_CONV[key](pooled_grad, _read_only(images), image_conv_in, _read_only(references), reference_conv_in,
                   kernel.astype(np.float32), pool_rows, pool_columns, totals, None if mix is None else mixing(mix))


def mixing(mix: np.ndarray) -> np.ndarray:
    """Return mix (images, references, classes, logits) as (images, references, logits, classes padded to whole
    vectors) float32, zeros in the padding: the loop then mixes a whole vector of classes per logit."""
    classes = mix.shape[2]
    out = np.zeros(mix.shape[:2] + (mix.shape[3], -(-classes // LANES) * LANES), dtype=np.float32)
    out[..., :classes] = mix.transpose(0, 1, 3, 2)
    return out


def _read_only(array: np.ndarray) -> np.ndarray:
    """Return a read-only view of array. numba compiles a loop again for each new argument type, and
    read-only is part of an array's type: the images and references come from the caller, read-only
    from Ray's object store or np.load(mmap_mode="r") and writable elsewhere, so passed read-only
    always, one compiled loop serves both (it took 7-9 s to compile a second one)."""
    view = array.view()
    view.flags.writeable = False
    return view


POOL_CONV = {}  # {(kernel rows, kernel columns, channels): the loop compiled for that kernel shape}


def _make_pool_conv(kh, kw, channels):
    # cache=True: the machine code goes to deepshap.cache's shared folder, keyed by the closure's values too.
    @numba.njit(parallel=True, cache=True)
    def pool_conv(pooled_grad, images, image_conv_in, references, reference_conv_in, kernel, pool_rows, pool_columns,
                  totals, mix):
        """pool_conv_backward's loop. Each thread takes a block of references and pairs each with every
        image while it is in cache; partial sums per block, added in block order."""
        count, rows, columns, _ = images.shape
        n, conv_rows, conv_columns, filters = reference_conv_in.shape
        classes = totals.shape[4]
        qh, qw = conv_rows // pool_rows, conv_columns // pool_columns
        image_max = np.empty((count, qh, qw, filters), dtype=np.float32)
        image_at = np.empty((count, qh, qw, filters, 2), dtype=np.int32)  # (row, column) of each maximum
        for k in range(count):
            window_maxima(image_conv_in[k], pool_rows, pool_columns, image_max[k], image_at[k])
        blocks = min(THREAD_BLOCKS, n)
        partial = np.zeros((blocks, count, rows, columns, channels, classes))
        lanes = -(-pooled_grad.shape[2] // LANES) * LANES  # each input position's multipliers, padded to whole vectors
        for block in numba.prange(blocks):
            reference_max = np.empty((qh, qw, filters), dtype=np.float32)
            reference_at = np.empty((qh, qw, filters, 2), dtype=np.int32)
            grad_in = np.zeros((rows, columns, channels, lanes), dtype=np.float32)
            flat = grad_in.reshape(-1)
            value = np.zeros((filters, lanes), dtype=np.float32)  # padding lanes stay 0
            kept = np.empty(filters, dtype=np.int64)
            bases = np.empty(filters, dtype=np.int64)
            mixed = np.zeros(1 if mix is None else mix.shape[3], dtype=np.float32)
            for r in range(block * n // blocks, (block + 1) * n // blocks):
                window_maxima(reference_conv_in[r], pool_rows, pool_columns, reference_max, reference_at)
                for k in range(count):
                    grad_in[:] = 0
                    _scatter(pooled_grad[k, r], image_max[k], image_at[k], reference_max, reference_at,
                             image_conv_in[k], reference_conv_in[r], kernel, kh, kw, channels, columns, value, flat, kept, bases)
                    if mix is None:
                        _add_products(grad_in, images[k], references[r], channels, partial[block, k])
                    else:
                        _add_mixed_products(grad_in, images[k], references[r], mix[k, r], mixed, partial[block, k])
        for block in range(blocks):
            totals += partial[block]
    return pool_conv


@numba.njit(inline="always")
def _scatter(grad, image_max, image_at, reference_max, reference_at, image, reference, kernel, kh, kw, channels,
             columns, value, flat, kept, bases):
    """Add one pair's multipliers at the input to flat, (rows, columns, channels, lanes) float32 flattened.

    grad (classes, pooled rows x pooled columns x filters): the multipliers at the pool's output.
    Window by window: first each filter's multiplier, routed through the max-pool and ReLU rules, goes to
    value (filters, lanes) float32, with the filter in kept and its window's corner in bases (filters,);
    then each kept filter's row goes into the input's window, times the kernel, a vector of lanes at a time.
    Two passes, so that the routing's branches stay out of the loop of vector fmas.
    """
    qh, qw, filters = reference_max.shape
    lanes = value.shape[1]
    for qi in range(qh):
        for qj in range(qw):
            n = 0
            for f in range(filters):
                i, j, scale, delta, relu = routed(image_max[qi, qj, f], reference_max[qi, qj, f],
                                                  image_at[qi, qj, f, 0], image_at[qi, qj, f, 1],
                                                  reference_at[qi, qj, f, 0], reference_at[qi, qj, f, 1], image,
                                                  reference, f)
                if scale == 0:
                    continue
                p = (qi * qw + qj) * filters + f
                factor = np.float64(scale) / delta * relu  # one division, not one per class
                for c in range(grad.shape[0]):
                    value[n, c] = np.float32(grad[c, p] * factor)
                kept[n] = f
                bases[n] = (i * columns + j) * channels * lanes
                n += 1
            for t in range(n):
                f = kept[t]
                for a in range(kh):
                    for b in range(kw):
                        for ch in range(channels):
                            at = bases[t] + ((a * columns + b) * channels + ch) * lanes
                            for c in range(0, lanes, LANES):
                                fma_lanes(flat, at + c, kernel[f, a, b, ch], value[t], c)


@numba.njit(inline="always")
def _add_products(grad_in, image, reference, channels, partial):
    """Add grad_in (rows, columns, channels, lanes) float32 times (image - reference) to partial (rows, columns,
    channels, classes) float64."""
    rows, columns, _, classes = partial.shape
    for i in range(rows):
        for j in range(columns):
            for ch in range(channels):
                difference = np.float64(image[i, j, ch] - reference[i, j, ch])
                if difference == 0:  # adds zeros: the multipliers are finite
                    continue
                for c in range(classes):
                    partial[i, j, ch, c] += grad_in[i, j, ch, c] * difference


@numba.njit(inline="always")
def _add_mixed_products(grad_in, image, reference, mix, mixed, partial):
    """Add, for each class c, (mix[:, c] @ grad_in's logits) times (image - reference) to partial (rows, columns,
    channels, classes) float64.

    grad_in (rows, columns, channels, lanes) float32: each logit's multipliers at the input; mix (logits,
    lanes) float32 and mixed (lanes,) a scratch vector: a class's multipliers summed over the logits
    with fma in logit order, a vector of classes at once.
    """
    rows, columns, channels, classes = partial.shape
    logits, lanes = mix.shape
    for i in range(rows):
        for j in range(columns):
            for ch in range(channels):
                difference = np.float64(image[i, j, ch] - reference[i, j, ch])
                if difference == 0:  # adds zeros: the multipliers are finite
                    continue
                mixed[:] = 0
                at = grad_in[i, j, ch]
                for logit in range(logits):
                    weight, row = at[logit], mix[logit]
                    for c in range(lanes):
                        mixed[c] = fma(row[c], weight, mixed[c])
                for c in range(classes):
                    partial[i, j, ch, c] += mixed[c] * difference
