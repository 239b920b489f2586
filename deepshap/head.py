"""Rules for the model's head: the multipliers of each explained output with respect to the logits.

Every rule returns an array (images, references, classes, logits) of float64: row c holds the
multipliers m[c, l] such that the head's change for class c is sum over l of m[c, l] * (zx[l] - zr[l]),
zx the image's logits and zr the reference's.

- `shap_softmax`: shap.DeepExplainer's softmax rule, in shap's float32 order, bit for bit.
- `shapley_softmax`: the exact Shapley values of softmax(z)[c] over the logits as players (each
  moved from the reference's value to the image's), divided by each logit's change: the generalized
  rescale rule of G-DeepSHAP (Chen, Lundberg & Lee 2022) with an exact explainer for the softmax.
- `linear`: the logits themselves, the identity.
"""

import math

import numba
import numpy as np
import tensorflow as tf

import deepshap.cache  # noqa: F401  where numba keeps the loops below: set before they are defined

# shap's thresholds below which a difference counts as zero (shap/explainers/_deep/deep_tf.py).
NONLINEAR_EPSILON = 1e-6  # ReLU, exp and the softmax rescale: fall back to the gradient
LINEAR_EPSILON = 1e-7  # max-pool and division: the multiplier is zero
MAX_SHAPLEY_LOGITS = 16  # the exact rule visits 2^logits coalitions per image-reference pair


def where_close(delta: np.ndarray, epsilon: float, close, far) -> np.ndarray:
    return np.where(np.abs(delta) < epsilon, close, far)


PAD_ROWS = 8  # rows of zeros after the real ones: more than a vector register holds at the array's end


def padded(values: np.ndarray) -> np.ndarray:
    """Return values (rows, L) with PAD_ROWS rows of zeros below.

    TensorFlow computes the last elements of an array, those after its last full vector, another way
    (measured: a different last bit), so a row's result would depend on how many rows share the call.
    """
    return np.concatenate([values, np.zeros((PAD_ROWS, values.shape[1]), values.dtype)])


def padded_exp(values: np.ndarray) -> np.ndarray:
    """Return TensorFlow's exp of values (rows, L), each row's bits independent of the others."""
    return tf.exp(padded(values)).numpy()[: len(values)]


def shap_softmax(image_logits: np.ndarray, reference_logits: np.ndarray) -> np.ndarray:
    """Return shap's softmax multipliers, (images, references, classes, logits).

    shap rewrites softmax as exp(z - max z) / sum(exp(z - max z)) and applies its exp, sum and
    division rules, then rescales by (centered delta / delta). All in float32, in shap's order: its
    division by a logit's change makes the values sensitive to the last bit where a logit barely moves.
    """
    zx, zr = image_logits.astype(np.float32), reference_logits.astype(np.float32)  # (images, L), (refs, L)
    cx = zx - zx.max(axis=1, keepdims=True)
    cr = zr - zr.max(axis=1, keepdims=True)
    ex, er = padded_exp(cx), padded_exp(cr)
    sx = tf.reduce_sum(padded(ex), axis=1, keepdims=True).numpy()[: len(ex)]
    sr = tf.reduce_sum(padded(er), axis=1, keepdims=True).numpy()[: len(er)]
    # From here on every array is (images, references, logits): the image's values against each reference's.
    zx, cx, ex, sx = (value[:, np.newaxis] for value in (zx, cx, ex, sx))
    with np.errstate(divide="ignore", invalid="ignore"):
        # shap's division rule (nonlinearity_2d) for evals / rsum, both varying.
        out11, out00, out10, out01 = ex / sx, er / sr, ex / sr, er / sx
        part_evals = np.float32(0.5) * (out11 - out01 + out10 - out00)
        part_sum = np.float32(0.5) * (out11 - out10 + out01 - out00)
        delta_evals, delta_sum = ex - er, sx - sr
        to_evals = where_close(delta_evals, LINEAR_EPSILON, 0, part_evals / delta_evals)
        to_sum = where_close(delta_sum, LINEAR_EPSILON, 0, part_sum / delta_sum)
        # Class c's one-hot output gradient reaches evals[c] directly, and every evals[j] through the sum.
        classes = zr.shape[1]
        grad_evals = to_sum[..., np.newaxis] + np.eye(classes, dtype=np.float32) * to_evals[..., np.newaxis]
        delta_centered = cx - cr
        exp_rule = where_close(delta_centered, NONLINEAR_EPSILON, er, (ex - er) / delta_centered)
        grad_centered = grad_evals * exp_rule[..., np.newaxis, :]
        delta_logits = zx - zr
        shift_rule = (delta_centered / delta_logits)[..., np.newaxis, :]
        close = (np.abs(delta_logits) < NONLINEAR_EPSILON)[..., np.newaxis, :]
        return np.where(close, grad_centered, grad_centered * shift_rule).astype(np.float32).astype(np.float64)


def linear(image_logits: np.ndarray, reference_logits: np.ndarray) -> np.ndarray:
    """Return the identity multipliers of a linear head, (images, references, logits, logits)."""
    logits = image_logits.shape[1]
    shape = (len(image_logits), len(reference_logits), logits, logits)
    return np.broadcast_to(np.eye(logits), shape)


def shapley_softmax(image_logits: np.ndarray, reference_logits: np.ndarray, classes: np.ndarray | None = None
                    ) -> np.ndarray:
    """Return the exact Shapley multipliers of the softmax, (images, references, classes, logits).

    Each multiplier is a weighted mean of secant slopes of softmax(z)[c] along z[l], so it lies in
    [-1/4, 1/4]; where a logit does not move it is the mean of the softmax's derivative, the limit.
    classes: None for every class, or (images, k) ints, each image's rows in that order (as
    deepshap.explainer.select picks them): only those are computed, with the same bytes (measured: 0.45 of
    the time for one class of ten, 20 images x 1,000 references).
    """
    logits = image_logits.shape[1]
    if logits > MAX_SHAPLEY_LOGITS:
        raise ValueError(f"the exact Shapley softmax rule takes at most {MAX_SHAPLEY_LOGITS} logits, got {logits}")
    size = np.arange(logits)
    # Shapley weight of a coalition of k other players: k! (n - k - 1)! / n!
    weights = np.array([math.factorial(k) * math.factorial(logits - k - 1) / math.factorial(logits) for k in size])
    wanted = np.ones((len(image_logits), logits), dtype=np.bool_)
    if classes is not None:
        wanted[:] = False
        wanted[np.arange(len(image_logits))[:, np.newaxis], classes] = True
    output = np.empty((len(image_logits), len(reference_logits), logits, logits))
    _shapley_pairs(image_logits.astype(np.float64), reference_logits.astype(np.float64), weights, wanted, output)
    if classes is None:
        return output
    return output[np.arange(len(classes))[:, np.newaxis], :, classes].transpose(0, 2, 1, 3)


@numba.njit(cache=True)
def _exp_secant(low: float, high: float) -> float:
    """Return (exp(high) - exp(low)) / (high - low), exp(low) where they are equal, without cancellation."""
    delta = high - low
    return math.exp(low) if delta == 0.0 else math.exp(low) * (math.expm1(delta) / delta)


@numba.njit(parallel=True, cache=True)
def _shapley_pairs(image_logits, reference_logits, weights, wanted, output):
    """Fill output (images, references, classes, logits) with the exact Shapley multipliers, for each image the
    classes that wanted (images, classes) bool marks (the other rows are left as they were).

    For a player i outside coalition S, let R = sum over j != i of e_j(S), with e_j = exp of the
    image's logit j if j is in S, else of the reference's. Moving z_i from zr_i to zx_i changes
    softmax_i by R * (ex_i - er_i) / ((ex_i + R)(er_i + R)) and softmax_c (c != i) by
    -e_c(S) * (ex_i - er_i) / ((ex_i + R)(er_i + R)); dividing by zx_i - zr_i turns (ex_i - er_i) into
    the secant of exp, computed without cancellation. R is a sum of positive terms from two tables
    of subset sums, so nothing cancels. Pairs are independent: any thread count gives the same bytes.
    """
    images, logits = image_logits.shape
    references = reference_logits.shape[0]
    full = (1 << logits) - 1
    for pair in numba.prange(images * references):
        k, r = pair // references, pair % references
        zx, zr = image_logits[k], reference_logits[r]
        shift = max(zx.max(), zr.max())  # exp of shifted logits stays <= 1
        ex, er, secant = np.empty(logits), np.empty(logits), np.empty(logits)
        for i in range(logits):
            ex[i], er[i] = math.exp(zx[i] - shift), math.exp(zr[i] - shift)
            secant[i] = _exp_secant(zr[i] - shift, zx[i] - shift)
        image_sums, reference_sums = np.zeros(full + 1), np.zeros(full + 1)  # sum of ex (er) over a subset
        values = np.empty((full + 1, logits))  # e_c(S) for every coalition S
        for subset in range(1, full + 1):
            low = subset & (subset - 1)
            bit = int(math.log2(subset ^ low) + 0.5)
            image_sums[subset] = image_sums[low] + ex[bit]
            reference_sums[subset] = reference_sums[low] + er[bit]
        for subset in range(full + 1):
            for c in range(logits):
                values[subset, c] = ex[c] if (subset >> c) & 1 else er[c]
        chosen = np.flatnonzero(wanted[k])
        multipliers = np.zeros((logits, logits))  # (player i, class c)
        for subset in range(full + 1):
            members = 0
            for c in range(logits):
                members += (subset >> c) & 1
            outside = full ^ subset
            for i in range(logits):
                if not (outside >> i) & 1:
                    continue
                rest = image_sums[subset] + reference_sums[outside ^ (1 << i)]
                h = weights[members] * secant[i] / ((ex[i] + rest) * (er[i] + rest))
                for c in chosen:  # each multiplier is its own sum: leaving out a class changes no other's bits
                    if c != i:
                        multipliers[i, c] -= h * values[subset, c]
                if wanted[k, i]:
                    # softmax_i's own change; added alone, so a small rest is not lost beside a large er_i
                    multipliers[i, i] += h * rest
        for c in chosen:
            for i in range(logits):
                output[k, r, c, i] = multipliers[i, c]
