"""The compiled loop of the model's top, Dense -> ReLU -> the head's Dense: most of the lab's time.

It replaces those three steps' plain rules. See dense_top_backward for the split that makes it
fast, and deepshap.kernels on its determinism and cache.
"""

import numba
import numpy as np

from deepshap.kernels import TILE, add_rows


def dense_top_backward(grad: np.ndarray, on: np.ndarray, rule: np.ndarray, hidden: np.ndarray, head: np.ndarray,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Return the multipliers at the input of the model's top, Dense -> ReLU -> the head's Dense: (refs, classes,
    inputs) float64.

    grad (refs, classes, logits) float64: the head rule's multipliers for one image. on (units,) bool:
    the image's units that are on; rule (refs, units) float64: the ReLU rule per reference. hidden
    (units, inputs) float32 and head (logits, units) float64: the two Dense kernels, transposed.
    out: a float64 array of the result's shape to write it in, or None for a new one.

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
    differs = rule - on  # (refs, units): exactly zero where the rule is 1 and the unit on, or 0 and off
    # (logits, inputs), the image's alone: made again for each chunk of references, as keeping one per
    # image across chunks would hold 216 KB an image (the lab's), 2 GB for 10,000 images at once.
    image_rows = (head[:, on] @ hidden[on].astype(np.float64)).astype(np.float32)
    unit_coefficients = ((grad @ head) * differs[:, np.newaxis]).astype(np.float32)  # (refs, classes, units)
    if out is None:
        out = np.empty(grad.shape[:2] + (hidden.shape[1],))
    _dense_top(np.ascontiguousarray(grad, dtype=np.float32), image_rows, unit_coefficients, hidden, differs != 0, out)
    return out


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
            add_rows(sums, grad[r], image_rows, all_logits, logits, start, stop)
            add_rows(sums, unit_coefficients[r], hidden, used, len(used), start, stop)
            out[r, :, start:stop] = sums[:, : stop - start]
