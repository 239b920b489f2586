"""The compiled loop of the conv block at the model's input, fused with (image - reference) and the sum over references.

It replaces the plain rules of Conv2D (valid, stride 1) -> [BatchNormalization] -> ReLU ->
MaxPooling2D (valid) and the final sum over references of multiplier * (image - reference),
pairing each reference with every image while the reference is in cache. Each pool window's routed
multipliers go straight into the window's input region, summed in registers (add_region), its classes
padded to whole vectors; two classes (the mistakes stage's true and predicted class) lie side by side
instead, a vector holding a region row's positions x the pair (add_pair_rows). Where more rows are
explained than the model has logits (several head rules at once), the block runs each logit's
unit row and mixes them at the input, per pair, by the head's multipliers: the backward is linear
in them. Where the model's top is right above the block (the lab's model), the loop makes each pair's
multipliers at the block's output itself, by the top's loop's arithmetic (top_pairs), and uses them
while they are in cache. See deepshap.kernels on its determinism and cache.
"""

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, errors, types
from numba.extending import intrinsic

from deepshap.kernels import (
    IR,
    LANES,
    THREAD_BLOCKS,
    TILE,
    VECTOR,
    add_tile,
    float32_arrays,
    fma,
    route_factor,
    window_max,
)

# Input positions of a window's region summed in registers at once: as many vectors as the CPU's vector
# registers hold beside a filter's values and a weight (32 with AVX-512, 16 else).
REGION_VECTORS = 24 if VECTOR == 16 else 12


def pool_conv_backward(pooled_grad: np.ndarray | None, images: np.ndarray, image_conv_in: np.ndarray,
                       references: np.ndarray, reference_conv_in: np.ndarray, kernel: np.ndarray, pool_rows: int,
                       pool_columns: int, totals: np.ndarray, mix: np.ndarray | None = None,
                       top: tuple | None = None) -> None:
    """Add sum over references of multiplier * (image - reference) to totals (images, rows, columns, channels, classes).

    pooled_grad (images, references, classes, pooled rows x pooled columns x filters) float64 or float32: each
    class's multiplier at the max-pool output. image_conv_in (images, conv rows, conv columns, filters)
    and reference_conv_in (references, ...) float32: the ReLU's inputs. kernel (filters, kernel rows,
    kernel columns, channels) of a stride-1 conv that pads nothing.
    mix: None, or (images, references, classes, logits) float64: the head's multipliers of each class
    with respect to the logits, pooled_grad then holding each logit's own rows (images, references,
    logits, ...): a class's multiplier at an input is its row of mix times the logits' there.
    top: None, or, with pooled_grad None, the model's top (deepshap.kernels_top) as the tuple
    (grad, image_rows, unit_coefficients, hidden, differs) of dense_top_backward's loop, each with the
    images' axis first where it has one (deepshap.kernels_top.pair_terms): each pair's multipliers at the
    max-pool output are then made in the loop and used while they are in cache, the same bytes as
    dense_top_backward's, not written to memory and read back (10.8 GB at 5,000 references in the
    lab's model; measured: the lab's explanation 8-10 % faster).

    The loop is compiled for the kernel's and the pool's shapes: add_region's sizes must be constants.
    """
    key = kernel.shape[1:] + (pool_rows, pool_columns)
    if key not in POOL_CONV:
        POOL_CONV[key] = _make_pool_conv(*key)
    if top is None:
        top = NO_TOP
    else:
        pooled_grad = np.empty((0, 0, 0, 0), dtype=np.float32)
    table = region_weights(kernel, pool_rows, pool_columns)
    paired = mix is None and totals.shape[4] == PAIR and pair_strips(kernel, pool_columns)
    strips = pair_weights(table, pool_rows + kernel.shape[1] - 1) if paired else NO_STRIPS
    POOL_CONV[key](pooled_grad, top, _read_only(images), image_conv_in, _read_only(references), reference_conv_in,
                   table, strips, totals, None if mix is None else mixing(mix))


def region_weights(kernel: np.ndarray, pool_rows: int, pool_columns: int) -> np.ndarray:
    """Return each filter's kernel placed in a pool window's region of the input, for each position of the
    window's maximum: (filters, pool rows x pool columns, region rows x region columns x channels) float32, zeros
    outside the kernel. The region: the input positions that a window's conv outputs read, (pool rows + kernel
    rows - 1) x (pool columns + kernel columns - 1), 4 x 4 in the lab's model."""
    filters, kh, kw, channels = kernel.shape
    table = np.zeros((filters, pool_rows, pool_columns, pool_rows + kh - 1, pool_columns + kw - 1, channels),
                     dtype=np.float32)
    for di in range(pool_rows):
        for dj in range(pool_columns):
            table[:, di, dj, di : di + kh, dj : dj + kw] = kernel
    return table.reshape(filters, pool_rows * pool_columns, -1)


# Two classes, a mistake's true and predicted one: padded to a vector of LANES, 6 of its 8 lanes would add zeros.
# Their multipliers lie side by side instead, and a vector holds a region row's positions x the two classes
# (measured on the real data, one thread, alternated: the mistakes' shards 9.5-13.7 % faster, the same bytes).
PAIR = 2


def pair_strips(kernel: np.ndarray, pool_columns: int) -> bool:
    """Whether a region row's positions x PAIR classes fill whole vectors of LANES: (pool columns + kernel columns - 1)
    x channels x 2, 4 x 1 x 2 = 8 in the lab's model."""
    return (pool_columns + kernel.shape[2] - 1) * kernel.shape[3] * PAIR % LANES == 0


def pair_weights(table: np.ndarray, region_rows: int) -> np.ndarray:
    """Return region_weights' table with each weight twice, once per class of a pair: (filters, pool rows x pool
    columns, region rows, region columns x channels x PAIR) float32, in the order of a region row's multipliers."""
    return np.repeat(table, PAIR, axis=2).reshape(table.shape[:2] + (region_rows, -1))


@intrinsic
def add_pair_rows(typingctx, flat, base, row_offsets, rows, vectors, value, kept, corners, strips, count):
    """Add, for t < count in order, strips[kept[t], corners[t], u] * (value[t, 0], value[t, 1], value[t, 0], ...) to
    flat[base + row_offsets[u]:...], a region row's positions x PAIR classes, for the region's rows u < rows.

    add_region's sums for two classes, lane by lane the same fma in the same order (the same bits), a vector
    of LANES holding LANES / PAIR positions instead of one. rows and vectors (of LANES a row): constants of the
    caller. flat, value (filters, PAIR) and strips float32, row_offsets, kept and corners int64, all C-contiguous.
    """
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(vectors, types.IntegerLiteral)):
        raise errors.RequireLiteralValue("add_pair_rows' rows and vectors must be constants")
    if not float32_arrays(flat, value, strips):
        return None  # a typing error at the call

    def codegen(context, builder, signature, args):
        code = IR(context, builder, signature, args, LANES)
        base = code.index(1)
        places = [(u, j) for u in range(rows.literal_value) for j in range(vectors.literal_value)]
        at = [code.vector_at(code.element(0, code.add(code.add(base, builder.load(code.element(2, code.constant(u)))),
                                                      code.constant(j * LANES))))
              for u, j in places]
        slots = code.sums(at)
        pair = ir.VectorType(ir.FloatType(), PAIR)
        repeat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [lane % PAIR for lane in range(LANES)])
        with cgutils.for_range(builder, code.index(9)) as loop:
            f, corner = builder.load(code.element(6, loop.index)), builder.load(code.element(7, loop.index))
            both = builder.load(builder.bitcast(code.element(5, loop.index, code.constant(0)), pair.as_pointer()),
                                align=4)
            values = builder.shuffle_vector(both, ir.Constant(pair, ir.Undefined), repeat)
            for slot, (u, j) in zip(slots, places):
                weights = builder.load(code.vector_at(code.element(8, f, corner, code.constant(u),
                                                                   code.constant(j * LANES))), align=4)
                code.fma_into(slot, weights, values)
        code.store(slots, at)
        return context.get_dummy_value()

    return types.void(flat, base, row_offsets, rows, vectors, value, kept, corners, strips, count), codegen


@intrinsic
def add_region(typingctx, flat, base, offsets, first, positions, lane, width, value, kept, corners, table, count):
    """Add, for t < count in order, table[kept[t], corners[t], p] * value[t, lane:lane + width] to
    flat[base + offsets[p] + lane:...], for the region's positions p = first .. first + positions - 1.

    The positions' sums stay in registers through all of a window's filters, and each sum adds every filter
    in order: a filter's zero weights (positions outside its kernel) add nothing, fma(0, x, s) being s
    for a finite x and a sum that starts at +0. positions and width: constants of the caller. flat, value
    (filters, lanes) and table float32, offsets, kept and corners int64, all C-contiguous; the caller keeps
    every vector in bounds.
    """
    if not (isinstance(positions, types.IntegerLiteral) and isinstance(width, types.IntegerLiteral)):
        raise errors.RequireLiteralValue("add_region's positions and width must be constants")
    if not float32_arrays(flat, value, table):
        return None  # a typing error at the call

    def codegen(context, builder, signature, args):
        code = IR(context, builder, signature, args, width.literal_value)
        base, first, lane = code.index(1), code.index(3), code.index(5)
        places = [code.add(first, code.constant(p)) for p in range(positions.literal_value)]
        at = [code.vector_at(code.element(0, code.add(code.add(base, builder.load(code.element(2, place))), lane)))
              for place in places]
        slots = code.sums(at)
        with cgutils.for_range(builder, code.index(11)) as loop:
            f, corner = builder.load(code.element(8, loop.index)), builder.load(code.element(9, loop.index))
            values = builder.load(code.vector_at(code.element(7, loop.index, lane)), align=4)
            for slot, place in zip(slots, places):
                code.fma_into(slot, code.splat(code.element(10, f, corner, place)), values)
        code.store(slots, at)
        return context.get_dummy_value()

    return types.void(flat, base, offsets, first, positions, lane, width, value, kept, corners, table, count), codegen


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


# The top's arrays of pool_conv_backward where it has none: of the types of a top's, so one compiled loop serves both.
NO_TOP = (np.empty((0, 0, 0, 0), dtype=np.float32), np.empty((0, 0, 0), dtype=np.float32),
          np.empty((0, 0, 0, 0), dtype=np.float32), np.empty((0, 0), dtype=np.float32), np.empty((0, 0, 0), dtype=bool))
NO_STRIPS = np.empty((0, 0, 0, 0), dtype=np.float32)  # pool_conv_backward's pair_weights where they do not apply
POOL_CONV = {}  # {(kernel rows, kernel columns, channels, pool rows, pool columns): the loop compiled for them}


def _make_pool_conv(kh, kw, channels, pool_rows, pool_columns):
    region_rows, region_columns = pool_rows + kh - 1, pool_columns + kw - 1
    region = region_rows * region_columns * channels  # input positions a window's outputs read
    group = min(region, REGION_VECTORS)  # positions summed in registers at once
    rest = region % group  # positions in the last, smaller group
    pair_vectors = region_columns * channels * PAIR // LANES  # vectors in a region row, where pair_strips holds

    # cache=True: the machine code goes to deepshap.cache's shared folder, keyed by the closure's values too.
    # nogil: the Explainer's thread makes the next chunk's forward pass meanwhile (Explainer.explain).
    @numba.njit(parallel=True, cache=True, nogil=True)
    def pool_conv(pooled_grad, top, images, image_conv_in, references, reference_conv_in, table, strips, totals, mix):
        """pool_conv_backward's loop. Each thread takes a block of references and pairs each with every
        image while it is in cache; partial sums per block, added in block order. One compiled loop serves
        both, with a top and without: no top is NO_TOP's empty arrays, and no pooled_grad an empty one; and
        two classes side by side (strips: pair_weights) or padded to whole vectors (strips empty)."""
        count, rows, columns, _ = images.shape
        n, conv_rows, conv_columns, filters = reference_conv_in.shape
        classes = totals.shape[4]
        qh, qw = conv_rows // pool_rows, conv_columns // pool_columns
        windows = qh * qw * filters  # of each filter, in the pool output's order
        image_max = np.empty((count, windows), dtype=np.float32)
        image_own = np.empty((count, windows), dtype=np.float32)
        image_index = np.empty((count, windows), dtype=np.int64)
        image_corner = np.empty((count, windows), dtype=np.int64)
        for k in range(count):
            window_routes(image_conv_in[k], pool_rows, pool_columns, image_max[k], image_own[k], image_index[k],
                          image_corner[k])
        blocks = min(THREAD_BLOCKS, n)
        partial = np.zeros((blocks, count, rows, columns, channels, classes))
        made_here = top[3].size > 0  # each pair's multipliers made by the top's loop, else read from pooled_grad
        pair_rows = top[0].shape[2] if made_here else pooled_grad.shape[2]  # classes, or logits with a mix
        paired = strips.size > 0
        # each input position's multipliers, padded to whole vectors unless they are a pair
        lanes = PAIR if paired else -(-pair_rows // LANES) * LANES
        wide = lanes - lanes % VECTOR  # the lanes in the CPU's widest vectors; the rest in LANES-wide ones
        for block in numba.prange(blocks):
            reference_max = np.empty(windows, dtype=np.float32)
            reference_own = np.empty(windows, dtype=np.float32)
            reference_index = np.empty(windows, dtype=np.int64)
            reference_corner = np.empty(windows, dtype=np.int64)
            image_other = np.empty(windows, dtype=np.float32)  # an image's ReLU input at the reference's argmax
            reference_other = np.empty(windows, dtype=np.float32)  # and the reference's at the image's
            factors = np.empty(windows, dtype=np.float64)
            corner = np.empty(windows, dtype=np.int64)
            grad_in = np.zeros((rows, columns, channels, lanes), dtype=np.float32)
            flat = grad_in.reshape(-1)
            offsets = np.empty(region, dtype=np.int64)  # each region position's offset in flat from its corner
            for u in range(region_rows):
                for v in range(region_columns):
                    for ch in range(channels):
                        offsets[(u * region_columns + v) * channels + ch] = ((u * columns + v) * channels + ch) * lanes
            row_offsets = offsets[:: region_columns * channels].copy()  # the offset of each region row's start
            value = np.zeros((filters, lanes), dtype=np.float32)  # padding lanes stay 0
            kept = np.empty(filters, dtype=np.int64)
            all_filters = np.arange(filters)  # a pair's: each filter, its multiplier 0 where it routes none
            corners = np.empty(filters, dtype=np.int64)
            mixed = np.zeros(1 if mix is None else mix.shape[3], dtype=np.float32)
            made, tile_sums, used, counts, all_logits = top_scratch(top, count, windows)
            for r in range(block * n // blocks, (block + 1) * n // blocks):
                window_routes(reference_conv_in[r], pool_rows, pool_columns, reference_max, reference_own,
                              reference_index, reference_corner)
                if made_here:
                    top_pairs(top, r, used, counts, all_logits, tile_sums, made)
                for k in range(count):
                    grad_in[:] = 0
                    # The pair's routing, all its windows at once in vectors, before the windows' regions (measured
                    # on the lab's model, one thread: the loop 1.25x faster at 2 classes, the same at 10).
                    _gather_other(image_conv_in[k].reshape(-1), reference_index, reference_conv_in[r].reshape(-1),
                                  image_index[k], image_other, reference_other)
                    pair_factors(image_max[k], reference_max, image_own[k], reference_own, image_other,
                                 reference_other, image_corner[k], reference_corner, factors, corner)
                    for qi in range(qh):
                        for qj in range(qw):
                            window = (qi * qw + qj) * filters
                            base = (qi * pool_rows * columns + qj * pool_columns) * channels * lanes
                            # One call per branch: the two arrays may differ in dtype.
                            if paired:
                                if made_here:
                                    _pair_values(made[k], window, filters, factors, corner, value, corners)
                                else:
                                    _pair_values(pooled_grad[k, r], window, filters, factors, corner, value, corners)
                                add_pair_rows(flat, base, row_offsets, region_rows, pair_vectors, value, all_filters,
                                              corners, strips, filters)
                                continue
                            if made_here:
                                kept_count = _route(made[k], window, filters, factors, corner, value, kept, corners)
                            else:
                                kept_count = _route(pooled_grad[k, r], window, filters, factors, corner, value, kept,
                                                    corners)
                            # The region's groups of positions, a vector of lanes at a time. add_region's sizes
                            # must be constants: one call per vector width and group size.
                            for lane in range(0, wide, VECTOR):
                                for first in range(0, region - rest, group):
                                    add_region(flat, base, offsets, first, group, lane, VECTOR, value, kept, corners,
                                               table, kept_count)
                                if rest:
                                    add_region(flat, base, offsets, region - rest, rest, lane, VECTOR, value, kept,
                                               corners, table, kept_count)
                            for lane in range(wide, lanes, LANES):
                                for first in range(0, region - rest, group):
                                    add_region(flat, base, offsets, first, group, lane, LANES, value, kept, corners,
                                               table, kept_count)
                                if rest:
                                    add_region(flat, base, offsets, region - rest, rest, lane, LANES, value, kept,
                                               corners, table, kept_count)
                    if mix is None:
                        _add_products(grad_in, images[k], references[r], channels, partial[block, k])
                    else:
                        _add_mixed_products(grad_in, images[k], references[r], mix[k, r], mixed, partial[block, k])
        for block in range(blocks):
            totals += partial[block]

    return pool_conv


@numba.njit(inline="always")
def top_scratch(top, count, windows):
    """Return a thread's scratch for top_pairs: the pairs' multipliers (images, classes, windows) and a tile's sums
    (classes, TILE) float32, room for each image's used units and their counts, and the logits' indices."""
    classes, logits, units = top[0].shape[2], top[0].shape[3], top[3].shape[0]
    return (np.empty((count, classes, windows), dtype=np.float32), np.empty((classes, TILE), dtype=np.float32),
            np.empty((count, units), dtype=np.int64), np.empty(count, dtype=np.int64), np.arange(logits))


@numba.njit(inline="always")
def top_pairs(top, r, used, counts, all_logits, sums, out):
    """Write to out (images, classes, inputs) the top's multipliers of each image with reference r, as
    dense_top_backward does: its loop's arithmetic, a tile of every image's at a time (the tile's rows of hidden
    stay in cache)."""
    grad, rows, unit_coefficients, hidden, differs = top
    logits, inputs = rows.shape[1], hidden.shape[1]
    for k in range(out.shape[0]):
        n = 0
        for u in range(differs.shape[2]):
            used[k, n] = u
            n += differs[k, r, u]
        counts[k] = n
    for start in range(0, inputs, TILE):
        stop = min(inputs, start + TILE)
        for k in range(out.shape[0]):
            sums[:] = 0
            add_tile(sums, grad[k, r], rows[k], all_logits, logits, start, stop)
            add_tile(sums, unit_coefficients[k, r], hidden, used[k], counts[k], start, stop)
            out[k, :, start:stop] = sums[:, : stop - start]


@numba.njit(cache=True)
def window_routes(conv_in, pool_rows, pool_columns, maxima, own, index, corner):
    """Fill, for each window of each filter (pooled rows x pooled columns x filters, flat): its max-pool output
    (relu applied) in maxima, the ReLU input at its argmax in own, the argmax's flat index in conv_in (conv rows,
    conv columns, filters) in index, and where it lies in the window (row x pool columns + column) in corner."""
    conv_columns, filters = conv_in.shape[1:]
    qw = conv_columns // pool_columns
    for p in range(maxima.size):
        q, f = p // filters, p % filters
        qi, qj = q // qw, q % qw
        maxima[p], i, j = window_max(conv_in, qi, qj, f, pool_rows, pool_columns)
        own[p] = conv_in[i, j, f]
        index[p] = (i * conv_columns + j) * filters + f
        corner[p] = (i - qi * pool_rows) * pool_columns + (j - qj * pool_columns)


@numba.njit(inline="always")
def _gather_other(image, reference_index, reference, image_index, image_other, reference_other):
    """Fill image_other with the image's ReLU inputs (flat) at the reference's argmaxes, and reference_other
    with the reference's at the image's: the loads that do not vectorise, apart from pair_factors' arithmetic."""
    for p in range(image_other.size):
        image_other[p] = image[reference_index[p]]
        reference_other[p] = reference[image_index[p]]


# error_model="numpy": no check for division by zero, a branch that stops LLVM from vectorising (route_factor never
# divides by zero). Not inlined: a loop of its own, whose few arrays LLVM can check for overlap.
@numba.njit(cache=True, error_model="numpy")
def pair_factors(x_max, r_max, x_own, r_own, x_other, r_other, x_corner, r_corner, factors, corner):
    """Fill factors (windows,) float64 with route_factor of each window of one pair, and corner with where in the
    window its multiplier goes: the image's argmax where x_max >= r_max, else the reference's."""
    for p in range(factors.size):
        x_out, r_out = x_max[p], r_max[p]
        mine = x_out >= r_out
        x_in_own, r_in_own, x_in_other, r_in_other = x_own[p], r_own[p], x_other[p], r_other[p]
        factors[p] = route_factor(x_out, r_out, x_in_own if mine else x_in_other, r_in_other if mine else r_in_own)
        x_at, r_at = x_corner[p], r_corner[p]
        corner[p] = x_at if mine else r_at


@numba.njit(inline="always")
def _pair_values(grad, start, filters, factors, corner, value, corners):
    """Write, for every filter of the window whose first filter is at start (in grad's windows), its two classes'
    multipliers (grad (PAIR, windows)) times its factor to value's row, and where in the window each goes to corners.

    _route's values for a pair, without picking the filters of nonzero factors: the others' zeros add nothing
    (as add_region's zero weights), and at two classes the pick cost more than their fmas (measured on the real
    data, one thread, 9 times alternated: the mistakes' shards faster in 8, by 7 % at the median, the same bytes)."""
    for f in range(filters):
        p = start + f
        factor = factors[p]
        value[f, 0] = np.float32(grad[0, p] * factor)
        value[f, 1] = np.float32(grad[1, p] * factor)
        corners[f] = corner[p]


@numba.njit(inline="always")
def _route(grad, start, filters, factors, corner, value, kept, corners):
    """Return how many filters the window whose first filter is at start (in grad's windows) passes a multiplier
    to: those of nonzero factors, in kept, their values (classes, of grad (classes, windows)) in value's rows
    and where in the window each goes in corners. The routing's branches stay out of the region's loop of
    vector fmas; the filters are picked without a branch (in half the lab's windows both maxima are 0, at
    random: a branch the CPU mispredicts)."""
    n = 0
    for f in range(filters):
        kept[n] = f
        n += factors[start + f] != 0
    for t in range(n):
        p = start + kept[t]
        factor = factors[p]
        for c in range(grad.shape[0]):
            value[t, c] = np.float32(grad[c, p] * factor)
        corners[t] = corner[p]
    return n


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
