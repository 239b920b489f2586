"""The compiled loop of the model's top, Dense -> ReLU -> the head's Dense: most of the lab's time.

It replaces those three steps' plain rules. See dense_top_backward for the split that makes it
fast, and deepshap.kernels on its determinism and cache. Where the top is right above the conv block
at the model's input, the block's loop runs the same arithmetic itself, pair by pair
(deepshap.kernels_input.top_pairs), from pair_terms.
"""

import numba
import numpy as np

from deepshap.kernels import THREAD_BLOCKS, TILE, add_tile


def image_rows(on: np.ndarray, hidden: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Return head[:, on] @ hidden[on], (logits, inputs) float32: the part of the top's product that is the image's
    alone (see dense_top_backward), summed in float64 and rounded once, so the BLAS's order cannot show."""
    return (head[:, on] @ hidden[on].astype(np.float64)).astype(np.float32)


def dense_top_backward(grad: np.ndarray, on: np.ndarray, rule: np.ndarray, hidden: np.ndarray, head: np.ndarray,
                       out: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
    """Return the multipliers at the input of the model's top, Dense -> ReLU -> the head's Dense: (refs, classes,
    inputs) float64.

    grad (refs, classes, logits) float64: the head rule's multipliers for one image. on (units,) bool:
    the image's units that are on; rule (refs, units) float64: the ReLU rule per reference. hidden
    (units, inputs) float32 and head (logits, units) float64: the two Dense kernels, transposed.
    out: a float64 or float32 array (its sums are float32: either holds them exactly) of the result's shape, or None.
    rows: image_rows(on, hidden, head), or None to make them here.

    The plain rules make (grad @ head * rule) @ hidden, one product of (refs x classes, units) by
    (units, inputs): most of the lab's time. The ReLU rule is exactly 1 where the image's unit and the
    reference's are both on, and 0 where both are off, so it splits into the image's on units, the same
    for every reference, and a part that is nonzero only on the units where the two differ (87 of 256
    per pair on the lab's data):
        grad @ (head[:, on] @ hidden[on])  +  ((grad @ head) * (rule - on)) @ hidden,
    the first a product with a (logits, inputs) matrix made once per image, the second summed over each
    reference's differing units alone. Summed in float32 with fma, in a fixed order (shap's own values
    are float32 throughout); float64 out.
    """
    rows = image_rows(on, hidden, head) if rows is None else rows  # (logits, inputs)
    if out is None:
        out = np.empty(grad.shape[:2] + (hidden.shape[1],))
    grad, unit_coefficients, differs = pair_terms(grad, on, rule, head)
    _dense_top(grad, rows, unit_coefficients, hidden, differs, out)
    return out


def pair_terms(grad: np.ndarray, on: np.ndarray, rule: np.ndarray, head: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return what the top's loop reads of one image's pairs besides the kernels and the image's rows (see
    dense_top_backward): grad (refs, classes, logits) float32, the unit coefficients (refs, classes, units) float32,
    and where the ReLU rule differs from the image's on units (refs, units) bool."""
    differs = rule - on  # (refs, units): exactly zero where the rule is 1 and the unit on, or 0 and off
    unit_coefficients = ((grad @ head) * differs[:, np.newaxis]).astype(np.float32)
    return np.ascontiguousarray(grad, dtype=np.float32), unit_coefficients, differs != 0


@numba.njit(parallel=True, cache=True)
def _dense_top(grad, image_rows, unit_coefficients, hidden, differs, out):
    """Write out[r, c] = grad[r, c] @ image_rows + unit_coefficients[r, c, used] @ hidden[used], a tile at a time,
    used the units where differs[r] is true.

    Each thread takes a block of references and runs them all through a tile before the next: the
    tile's columns of hidden (256 KB in the lab's model) stay in cache across references, where the
    whole of hidden (5.5 MB) does not (measured: it was read from memory again for each reference,
    most of a 2-class explanation's time). Each value's sum keeps its order: any thread count and
    block split give the same bytes.
    """
    refs, classes, logits = grad.shape
    inputs = hidden.shape[1]
    all_logits = np.arange(logits)
    blocks = min(THREAD_BLOCKS, refs)
    for block in numba.prange(blocks):
        first, last = block * refs // blocks, (block + 1) * refs // blocks
        used = np.empty((last - first, differs.shape[1]), dtype=np.int64)
        counts = np.empty(last - first, dtype=np.int64)
        for r in range(first, last):
            units = np.flatnonzero(differs[r])
            counts[r - first] = len(units)
            used[r - first, : len(units)] = units
        sums = np.empty((classes, TILE), dtype=np.float32)
        for start in range(0, inputs, TILE):
            stop = min(inputs, start + TILE)
            for r in range(first, last):
                sums[:] = 0
                add_tile(sums, grad[r], image_rows, all_logits, logits, start, stop)
                add_tile(sums, unit_coefficients[r], hidden, used[r - first], counts[r - first], start, stop)
                out[r, :, start:stop] = sums[:, : stop - start]
