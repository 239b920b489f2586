"""What the compiled loops share: an fma that rounds once, the max-pool and ReLU rules of a window, the top's
product of rows, the code generator of their vector loops (IR), whose sums stay in registers, and arrays
placed on a cache line for their vector loads (aligned).

The loops themselves, each replacing a chain of plain rules (deepshap.fused registers them):
- deepshap.kernels_input: the conv block at the model's input, fused with (image - reference) and the sum
  over references;
- deepshap.kernels_block: a conv block inside the model;
- deepshap.kernels_top: the model's top, Dense -> ReLU -> the head's Dense.
A conv block is Conv2D (stride 1) -> [BatchNormalization] -> ReLU -> MaxPooling2D (valid): given each
class's multipliers at the max-pool output, it routes them through shap's max-pool rule, rescales
them by the ReLU rule and transposes the conv (BatchNormalization's scale folded into its kernel).
These are the backward pass's largest tensors (26 x 26 x 32 per pair in the lab's model), so each
block runs as one loop rather than layer by layer.

Deterministic on any CPU: sums in a fixed order, each product and sum rounded as written (fma is one
rounding on every CPU; no fastmath, which lets LLVM reassociate sums by the host's vector width and
fuse a * b + c where the CPU can), and a fixed split of references into thread blocks. The vector
loops' width follows the CPU (VECTOR), but each lane is one scalar fma in the same order: the width
changes the speed, not the bits. The multipliers inside a pair are float32, as in shap; the sums over
references float64.

Compiled once per user, not per copy of the code: cache=True keeps the machine code in
deepshap.cache's shared folder (~/.cache/numba/deepshap, or under NUMBA_CACHE_DIR).
"""

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import binding, ir
from numba.core import cgutils, config, types
from numba.extending import intrinsic

from deepshap.head import LINEAR_EPSILON, NONLINEAR_EPSILON

THREAD_BLOCKS = 8  # blocks of references spread over the cores; fixed, so the thread count cannot change the sum
TILE = 256  # positions of the top's rows taken at once: 8 rows and the (classes, TILE) sums stay in L1
LANES = 8  # float32 values in a vector of the narrowest AVX unit: the input block pads classes to a multiple


CACHE_LINE = 64  # bytes


def aligned_empty(shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """Return an uninitialised C-contiguous array whose data start on a cache line."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(size + CACHE_LINE, dtype=np.uint8)
    start = -buffer.ctypes.data % CACHE_LINE
    return buffer[start : start + size].view(dtype).reshape(shape)


def aligned(array: np.ndarray, dtype: npt.DTypeLike | None = np.float32) -> np.ndarray:
    """Return array as a C-contiguous array of dtype (None: its own) whose data start on a cache line, a copy
    unless it is one already.

    The top's loops load its rows a vector at a time; where they start mid-line (NumPy aligns to 16 bytes), every
    AVX-512 load spans two cache lines. Only the first row is placed: the others start on a line too where a row's
    bytes are a multiple of 64, as in the lab's model (5,408 float32). Measured on the lab's top, one thread, an
    Intel Xeon: the loop 1.4x faster at 1 class, 1.3x at 2, with the rows aligned. The same bytes: alignment moves
    no sum.
    """
    array = np.asarray(array, dtype=dtype)
    if array.flags.c_contiguous and array.ctypes.data % CACHE_LINE == 0:
        return array
    out = aligned_empty(array.shape, array.dtype)
    out[...] = array
    return out


def vector_lanes() -> int:
    """Return the float32 lanes of the top's register blocks: 16 where the CPU has AVX-512 (32 vector
    registers), else 8 (16 registers). Only the speed depends on it: each lane is one scalar fma."""
    # numba compiles for NUMBA_CPU_FEATURES where set (none for NUMBA_CPU_NAME=generic), else for the host's.
    features = binding.get_host_cpu_features().flatten() if config.CPU_FEATURES is None else config.CPU_FEATURES
    return 16 if "+avx512f" in features.split(",") else 8


VECTOR = vector_lanes()
# The top's register blocks, {classes: vectors of VECTOR columns}: classes x vectors sums held in registers
# through all of a reference's rows, beside a row's vectors. Measured on the lab's model, one thread, AMD EPYC
# (AVX-512; and compiled for Haswell, AVX2): 5 x 4 (5 x 2) and 2 x 8 (2 x 4) were the fastest of the shapes
# that fit; one more vector spilled registers.
BLOCKS = {5: 4, 2: 8, 1: 8} if VECTOR == 16 else {5: 2, 2: 4, 1: 4}


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once: LLVM's fma, one instruction where the CPU has it, and the same bits where
    it has not (then a library call). Plain a * b + c may or may not be fused, by CPU: fastmath's
    'contract', which this project leaves off."""
    def codegen(context, builder, signature, args):
        kind = args[0].type
        return builder.call(builder.module.declare_intrinsic("llvm.fma", [kind], ir.FunctionType(kind, [kind] * 3)),
                            args)
    return a(a, b, c), codegen


class IR:
    """What the vector loops' code generators share: an intrinsic's arguments as LLVM values and pointers, float32
    vectors of a width, and their fma."""

    def __init__(self, context, builder, signature, args, width: int):
        self.context, self.builder, self.signature, self.args = context, builder, signature, args
        self.vector = ir.VectorType(ir.FloatType(), width)
        self.width = width
        self.fma_vector = cgutils.get_or_insert_function(builder.module, ir.FunctionType(self.vector, [self.vector] * 3),
                                                         f"llvm.fma.v{width}f32")

    def index(self, position: int):
        """The integer argument at position, as intp."""
        return self.context.cast(self.builder, self.args[position], self.signature.args[position], types.intp)

    def constant(self, value: int):
        return ir.Constant(cgutils.intp_t, value)

    def add(self, a, b):
        return self.builder.add(a, b)

    def element(self, position: int, *indices):
        """A pointer to the C-contiguous array argument at position, at indices (intp values)."""
        array = self.context.make_array(self.signature.args[position])(self.context, self.builder, self.args[position])
        return cgutils.get_item_pointer2(self.context, self.builder, array.data,
                                         cgutils.unpack_tuple(self.builder, array.shape),
                                         cgutils.unpack_tuple(self.builder, array.strides), "C", list(indices))

    def vector_at(self, pointer):
        """pointer (to a float32) as a pointer to a vector: its loads and stores say align 4, as any float32's."""
        return self.builder.bitcast(pointer, self.vector.as_pointer())

    def splat(self, pointer):
        """A vector of the float32 at pointer in every lane."""
        one = self.builder.insert_element(ir.Constant(self.vector, ir.Undefined), self.builder.load(pointer),
                                          ir.Constant(ir.IntType(32), 0))
        return self.builder.shuffle_vector(one, ir.Constant(self.vector, ir.Undefined),
                                           ir.Constant(ir.VectorType(ir.IntType(32), self.width), [0] * self.width))

    def sums(self, pointers: list) -> list:
        """Stack slots holding the vectors at pointers (LLVM keeps them in registers)."""
        slots = [cgutils.alloca_once(self.builder, self.vector) for _ in pointers]
        for slot, pointer in zip(slots, pointers):
            self.builder.store(self.builder.load(pointer, align=4), slot)
        return slots

    def fma_into(self, slot, weights, values) -> None:
        """slot = fma(weights, values, slot), lane by lane: each lane the scalar fma, rounded once."""
        self.builder.store(self.builder.call(self.fma_vector, [weights, values, self.builder.load(slot)]), slot)

    def store(self, slots: list, pointers: list) -> None:
        for slot, pointer in zip(slots, pointers):
            self.builder.store(self.builder.load(slot), pointer, align=4)


def float32_arrays(*arrays) -> bool:
    """Whether each is a C-contiguous float32 array: what the vector loops' intrinsics take."""
    return all(isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C" for a in arrays)


def _row_block(classes: int, vectors: int):
    """Return an intrinsic add_block(sums, first, column, coefficients, rows, row_column, used, count) that adds,
    for t < count in order, coefficients[c, used[t]] * rows[used[t], row_column + q] to sums[c, column + q],
    for the classes first .. first + classes - 1 and vectors x VECTOR columns q, one fma each.

    The sums stay in registers through all the rows: each row's vectors are loaded once for all the block's
    classes and each sum is loaded and stored once (add_rows loads and stores them every eight rows).
    sums, coefficients and rows float32 with two axes, used int64, all C-contiguous; the caller keeps the
    block in bounds.
    """
    @intrinsic
    def add_block(typingctx, sums, first, column, coefficients, rows, row_column, used, count):
        if not (float32_arrays(sums, coefficients, rows) and sums.ndim == coefficients.ndim == rows.ndim == 2):
            return None  # a typing error at the call

        def codegen(context, builder, signature, args):
            code = IR(context, builder, signature, args, VECTOR)
            class_rows = [code.add(code.index(1), code.constant(c)) for c in range(classes)]
            columns = [code.add(code.index(2), code.constant(v * VECTOR)) for v in range(vectors)]
            row_columns = [code.add(code.index(5), code.constant(v * VECTOR)) for v in range(vectors)]
            at = [code.vector_at(code.element(0, row, column)) for row in class_rows for column in columns]
            slots = code.sums(at)  # class by class, each class's vectors in order
            with cgutils.for_range(builder, code.index(7)) as loop:
                unit = builder.load(code.element(6, loop.index))
                values = [builder.load(code.vector_at(code.element(4, unit, column)), align=4) for column in row_columns]
                for c, row in enumerate(class_rows):
                    weights = code.splat(code.element(3, row, unit))
                    for v in range(vectors):
                        code.fma_into(slots[c * vectors + v], weights, values[v])
            code.store(slots, at)
            return context.get_dummy_value()

        return types.void(sums, first, column, coefficients, rows, row_column, used, count), codegen

    return add_block


_add_block_5, _add_block_2, _add_block_1 = (_row_block(classes, BLOCKS[classes]) for classes in (5, 2, 1))
_COLUMNS_5, _COLUMNS_2, _COLUMNS_1 = (BLOCKS[classes] * VECTOR for classes in (5, 2, 1))


@numba.njit(inline="always")
def add_tile(sums, coefficients, rows, used, count, start, stop):
    """Add to sums (classes, stop - start) coefficients[c, used[t]] * rows[used[t], start:stop] for t < count, in
    order: add_rows' sums, bit for bit, in register blocks of 5, 2 or 1 classes (BLOCKS), add_rows for the
    columns past the last whole block.

    Measured on the lab's top, one thread: 1.45-1.6x faster than add_rows at 10 classes, 1.3x at 2. add_rows pads a
    pass with zero coefficients, which adds nothing: fma(0, x, s) is s for a finite x and a sum that starts at
    +0 (such a sum is never -0).
    """
    classes, width = sums.shape[0], stop - start
    first = 0
    while first < classes:
        left = classes - first
        block = 5 if left >= 5 else (2 if left >= 2 else 1)
        if block == 5:
            whole = width - width % _COLUMNS_5
            for column in range(0, whole, _COLUMNS_5):
                _add_block_5(sums, first, column, coefficients, rows, start + column, used, count)
        elif block == 2:
            whole = width - width % _COLUMNS_2
            for column in range(0, whole, _COLUMNS_2):
                _add_block_2(sums, first, column, coefficients, rows, start + column, used, count)
        else:
            whole = width - width % _COLUMNS_1
            for column in range(0, whole, _COLUMNS_1):
                _add_block_1(sums, first, column, coefficients, rows, start + column, used, count)
        if whole < width:
            add_rows(sums[first: first + block, whole:width], coefficients[first: first + block], rows, used, count,
                     start + whole, stop)
        first += block


@numba.njit(inline="always")
def window_max(conv_in, qi, qj, f, pool_rows, pool_columns):
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
def route_factor(x_out, r_out, x_in, r_in):
    """Return shap's max-pool and ReLU rules for one window: the factor, float64, by which its output's multiplier
    goes to the ReLU input at the argmax, image's if x_out >= r_out, else the reference's; 0 where the rules
    give nothing (no change, or an input change below LINEAR_EPSILON).

    x_out, r_out: the window's max-pool outputs; x_in, r_in: the ReLU inputs at that argmax. The output's
    change divided by the ReLU output's change there, times the ReLU's rescale rule. No branch: selects,
    with 1 for the divisors not taken, so LLVM vectorises a loop of these (each lane the scalar's bits).
    """
    scale = x_out - r_out
    delta = max(x_in, np.float32(0.0)) - max(r_in, np.float32(0.0))
    delta_in = x_in - r_in
    linear = abs(delta_in) < NONLINEAR_EPSILON
    quotient = np.float32(delta / (np.float32(1.0) if linear else delta_in))
    step = np.float32(1.0) if r_in > 0 else np.float32(0.0)
    relu = step if linear else quotient
    keep = (scale != 0) & (abs(delta) >= LINEAR_EPSILON)
    factor = np.float64(scale) / (delta if keep else np.float32(1.0)) * relu  # one division, not one per class
    return factor if keep else 0.0


@numba.njit(cache=True)
def window_maxima(conv_in, pool_rows, pool_columns, maxima, at):
    """Fill maxima (pooled rows, pooled columns, filters) and at (..., 2) with each window's window_max."""
    qh, qw, filters = maxima.shape
    for qi in range(qh):
        for qj in range(qw):
            for f in range(filters):
                maxima[qi, qj, f], at[qi, qj, f, 0], at[qi, qj, f, 1] = window_max(conv_in, qi, qj, f, pool_rows,
                                                                                    pool_columns)


@numba.njit(cache=True)
def add_rows(sums, coefficients, rows, used, count, start, stop):
    """Add to sums (classes, stop - start) coefficients[c, used[t]] * rows[used[t], start:stop] for t < count, in order.

    Eight rows a pass, so each sum is loaded and stored once per eight products; a last pass of fewer
    adds zeros for the rest (0 * a finite number, exactly). Two classes a pass, so each row's vector
    is loaded once for both: the loads, not the fmas, bound this loop (measured: the lab's top 1.15x
    faster at 2 classes, 1.1x at 10; four classes a pass spilled registers, 3x slower). Each sum keeps its
    order of fmas, so the pairing changes no bit. Indices count from 0 within the tile: LLVM
    vectorises only loops whose indices it knows are not negative.
    """
    width = stop - start
    classes = sums.shape[0]
    for t in range(0, count, 8):
        u0 = used[t]
        u1, u2, u3 = _or_first(used, t + 1, count), _or_first(used, t + 2, count), _or_first(used, t + 3, count)
        u4, u5, u6, u7 = (_or_first(used, t + 4, count), _or_first(used, t + 5, count), _or_first(used, t + 6, count),
                          _or_first(used, t + 7, count))
        r0, r1, r2, r3 = rows[u0, start:stop], rows[u1, start:stop], rows[u2, start:stop], rows[u3, start:stop]
        r4, r5, r6, r7 = rows[u4, start:stop], rows[u5, start:stop], rows[u6, start:stop], rows[u7, start:stop]
        for c in range(0, classes - 1, 2):
            a0, a1, a2, a3, a4, a5, a6, a7 = _coefficients(coefficients[c], u0, u1, u2, u3, u4, u5, u6, u7, t, count)
            b0, b1, b2, b3, b4, b5, b6, b7 = _coefficients(coefficients[c + 1], u0, u1, u2, u3, u4, u5, u6, u7, t, count)
            row, other = sums[c], sums[c + 1]
            for q in range(width):
                x0, x1, x2, x3, x4, x5, x6, x7 = r0[q], r1[q], r2[q], r3[q], r4[q], r5[q], r6[q], r7[q]
                row[q] = _fma8(row[q], a0, x0, a1, x1, a2, x2, a3, x3, a4, x4, a5, x5, a6, x6, a7, x7)
                other[q] = _fma8(other[q], b0, x0, b1, x1, b2, x2, b3, x3, b4, x4, b5, x5, b6, x6, b7, x7)
        if classes % 2:  # the last class of an odd count, alone
            a0, a1, a2, a3, a4, a5, a6, a7 = _coefficients(coefficients[classes - 1], u0, u1, u2, u3, u4, u5, u6, u7, t,
                                                           count)
            row = sums[classes - 1]
            for q in range(width):
                row[q] = _fma8(row[q], a0, r0[q], a1, r1[q], a2, r2[q], a3, r3[q], a4, r4[q], a5, r5[q], a6, r6[q],
                               a7, r7[q])


@numba.njit(inline="always")
def _coefficients(coefficients, u0, u1, u2, u3, u4, u5, u6, u7, t, count):
    """Return one class's coefficients (float32) of a pass's eight rows, zeros past the count."""
    zero = np.float32(0.0)
    return (coefficients[u0], coefficients[u1] if t + 1 < count else zero, coefficients[u2] if t + 2 < count else zero,
            coefficients[u3] if t + 3 < count else zero, coefficients[u4] if t + 4 < count else zero,
            coefficients[u5] if t + 5 < count else zero, coefficients[u6] if t + 6 < count else zero,
            coefficients[u7] if t + 7 < count else zero)


@numba.njit(inline="always")
def _fma8(s, a0, x0, a1, x1, a2, x2, a3, x3, a4, x4, a5, x5, a6, x6, a7, x7):
    """Return s + a0 * x0 + ... + a7 * x7, an fma at a time, in that order."""
    s = fma(a0, x0, s)
    s = fma(a1, x1, s)
    s = fma(a2, x2, s)
    s = fma(a3, x3, s)
    s = fma(a4, x4, s)
    s = fma(a5, x5, s)
    s = fma(a6, x6, s)
    return fma(a7, x7, s)


@numba.njit(inline="always")
def _or_first(used, t, count):
    """Return used[t], or used[0] past the count (a row that a zero coefficient then multiplies)."""
    return used[t] if t < count else used[0]
