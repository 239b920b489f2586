"""The accelerated engine's layers and rules, in JAX: each layer's forward op and DeepLIFT rule, and the head's rules.

The same rules as deepshap.network and deepshap.head (shap.DeepExplainer's), written for batches of
(image, reference) pairs, in float32. Every backward rule maps multipliers at a layer's output,
(images, references, classes, *output shape), to multipliers at its input:

    Linear layers (conv, dense, batch_norm at inference, flatten): the transpose of the layer's
        linear part, which JAX derives from its forward op (jax.linear_transpose).
    relu: shap's rescale rule, (relu(x) - relu(r)) / (x - r), the gradient where x ~ r.
    max_pool: shap's rule, the output's change routed to each side's argmax, divided there by the
        input's change.

chunk_values is one step of the engine: the head's rule, the layers' rules back to the input, and
the sum over a chunk of references of multiplier * (image - reference).

Every product runs at Precision.HIGHEST: a GPU's default float32 product rounds its inputs to
TF32's 10 bits, far from the CPU engine's values.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# shap's thresholds below which a difference counts as zero (shap/explainers/_deep/deep_tf.py).
NONLINEAR_EPSILON = 1e-6  # ReLU, exp and the softmax rescale: fall back to the gradient
LINEAR_EPSILON = 1e-7  # max-pool and division: the multiplier is zero
HIGHEST = lax.Precision.HIGHEST
# Image-reference pairs whose 2^logits coalitions the Shapley rule holds at once: 512 x 1,024 x 10
# float32, 21 MB per array, a few arrays.
SHAPLEY_PAIRS_PER_STEP = 512
MAX_SHAPLEY_LOGITS = 16  # 2^logits coalitions per pair


@dataclass(frozen=True)
class Layer:
    """One step of the model: kind names its entry in FORWARD and RULES, or is "softmax", the head's.

    weights: float32 NumPy arrays, the layer's linear part first, then its bias if it has one
    (conv: kernel (rows, columns, in, out); dense: kernel (in, out); batch_norm: scale, shift per channel).
    options: what the kind needs besides weights (conv: strides, padding, dilation; max_pool: pool_size, padding).
    """

    kind: str
    weights: tuple = ()
    options: dict = field(default_factory=dict)


def conv(layer: Layer, kernel: jax.Array, x: jax.Array) -> jax.Array:
    """x (batch, rows, columns, in) -> (batch, out rows, out columns, out); lax's SAME pads as TensorFlow's."""
    return lax.conv_general_dilated(x, kernel, layer.options["strides"], layer.options["padding"],
                                    rhs_dilation=layer.options["dilation"], precision=HIGHEST,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


# The linear part of each linear kind, (layer, its first weight, x (batch, *input shape)) -> (batch, *output shape).
LINEAR = {
    "conv": conv,
    "dense": lambda layer, kernel, x: jnp.matmul(x, kernel, precision=HIGHEST),
    "batch_norm": lambda layer, scale, x: x * scale,  # at inference: (x - mean) * scale' + beta, folded
    "flatten": lambda layer, _, x: x.reshape(len(x), -1),
}


def linear_forward(layer: Layer, weights: tuple, x: jax.Array) -> jax.Array:
    """The layer's linear part, then its bias (broadcast over the last axis) if it has one."""
    y = LINEAR[layer.kind](layer, weights[0] if weights else None, x)
    return y + weights[1] if len(weights) > 1 else y


def linear_rule(layer: Layer, weights: tuple, grad: jax.Array, x_in: jax.Array, r_in: jax.Array) -> jax.Array:
    """The transpose of the layer's linear part, over (images * references * classes) rows at once."""
    batch, input_shape = grad.shape[:3], x_in.shape[1:]
    rows = grad.reshape((-1,) + grad.shape[3:])
    flat_input = jax.ShapeDtypeStruct((len(rows),) + input_shape, grad.dtype)
    transpose = jax.linear_transpose(lambda x: LINEAR[layer.kind](layer, weights[0] if weights else None, x),
                                     flat_input)
    return transpose(rows)[0].reshape(batch + input_shape)


def relu_rule(layer: Layer, weights: tuple, grad: jax.Array, x_in: jax.Array, r_in: jax.Array) -> jax.Array:
    """shap's ReLU rule. grad: (images, references, classes, *shape); x_in: (images, *shape); r_in:
    (references, *shape)."""
    delta = x_in[:, None] - r_in[None]  # (images, references, *shape)
    rescale = (jnp.maximum(x_in, 0)[:, None] - jnp.maximum(r_in, 0)[None]) / nonzero(delta)
    gradient = jnp.broadcast_to((r_in > 0).astype(grad.dtype)[None], delta.shape)
    return grad * jnp.where(jnp.abs(delta) < NONLINEAR_EPSILON, gradient, rescale)[:, :, None]


def pool_grid(size: int, pool: int, padding: str) -> tuple[int, int, int]:
    """Return (windows, cells kept of the input, padding before them) along one axis of a max-pool.

    VALID drops the cells past the last whole window; SAME pads with -inf as TensorFlow does, the odd
    cell after the input."""
    windows = -(-size // pool) if padding == "SAME" else size // pool
    kept = min(size, windows * pool)
    return windows, kept, (windows * pool - kept) // 2


def pool_windows(layer: Layer, values: jax.Array) -> jax.Array:
    """values (*batch, rows, columns, channels) -> (*batch, out rows, out columns, channels, window)."""
    (pool_rows, pool_columns), padding = layer.options["pool_size"], layer.options["padding"]
    out_rows, kept_rows, top = pool_grid(values.shape[-3], pool_rows, padding)
    out_columns, kept_columns, left = pool_grid(values.shape[-2], pool_columns, padding)
    pads = [(0, 0)] * (values.ndim - 3) + [(top, out_rows * pool_rows - kept_rows - top),
                                           (left, out_columns * pool_columns - kept_columns - left), (0, 0)]
    padded = jnp.pad(values[..., :kept_rows, :kept_columns, :], pads, constant_values=-jnp.inf)
    blocks = padded.reshape(values.shape[:-3] + (out_rows, pool_rows, out_columns, pool_columns, values.shape[-1]))
    # (..., out rows, pool rows, out columns, pool columns, channels)
    # -> (..., out rows, out columns, channels, pool rows, pool columns)
    moved = jnp.moveaxis(blocks, (-5, -3, -1, -4, -2), (-5, -4, -3, -2, -1))
    return moved.reshape(moved.shape[:-2] + (pool_rows * pool_columns,))


def pool_unwindow(layer: Layer, windows: jax.Array, input_shape: tuple) -> jax.Array:
    """The inverse of pool_windows: (*batch, out rows, out columns, channels, window) -> (*batch, *input_shape),
    zero where no window reads."""
    (pool_rows, pool_columns), padding = layer.options["pool_size"], layer.options["padding"]
    (rows, columns, channels), batch = input_shape, windows.shape[:-4]
    out_rows, kept_rows, top = pool_grid(rows, pool_rows, padding)
    out_columns, kept_columns, left = pool_grid(columns, pool_columns, padding)
    blocks = windows.reshape(batch + (out_rows, out_columns, channels, pool_rows, pool_columns))
    moved = jnp.moveaxis(blocks, (-5, -2, -4, -1, -3), (-5, -4, -3, -2, -1))
    padded = moved.reshape(batch + (out_rows * pool_rows, out_columns * pool_columns, channels))
    kept = padded[..., top : top + kept_rows, left : left + kept_columns, :]
    return jnp.pad(kept, [(0, 0)] * len(batch) + [(0, rows - kept_rows), (0, columns - kept_columns), (0, 0)])


def max_pool_forward(layer: Layer, weights: tuple, x: jax.Array) -> jax.Array:
    return pool_windows(layer, x).max(axis=-1)


def max_pool_rule(layer: Layer, weights: tuple, grad: jax.Array, x_in: jax.Array, r_in: jax.Array) -> jax.Array:
    """shap's max-pool rule, as deepshap.network.MaxPool.input_factors: the output's change split in
    max(xo, ro) - ro, routed to the image's (first) argmax, and xo - max(xo, ro), to the reference's,
    each divided by the input's change there (zero where it is below 1e-7). Windows do not overlap.

    grad (images, references, classes, out rows, out columns, channels) -> (..., rows, columns, channels).
    """
    # (images, 1, out rows, out columns, channels, window) and (1, references, ...)
    x_windows, r_windows = pool_windows(layer, x_in)[:, None], pool_windows(layer, r_in)[None]
    x_out, r_out = x_windows.max(axis=-1), r_windows.max(axis=-1)
    cross = jnp.maximum(x_out, r_out)
    positions = jnp.arange(x_windows.shape[-1])
    to_image = (positions == x_windows.argmax(axis=-1)[..., None]) * (cross - r_out)[..., None]
    to_reference = (positions == r_windows.argmax(axis=-1)[..., None]) * (x_out - cross)[..., None]
    routed = pool_unwindow(layer, to_image + to_reference, x_in.shape[1:])  # (images, references, *input shape)
    delta = x_in[:, None] - r_in[None]
    factors = jnp.where(jnp.abs(delta) < LINEAR_EPSILON, 0.0, routed / nonzero(delta))
    # Each window's multiplier, spread over the window's positions.
    spread = pool_unwindow(layer, jnp.broadcast_to(grad[..., None], grad.shape + positions.shape), x_in.shape[1:])
    return spread * factors[:, :, None]


FORWARD = {kind: linear_forward for kind in LINEAR} | {
    "relu": lambda layer, weights, x: jnp.maximum(x, 0), "max_pool": max_pool_forward,
}
# Layer kind -> its backward rule, (layer, weights, grad, image inputs, reference inputs) -> grad at the input.
RULES = {kind: linear_rule for kind in LINEAR} | {"relu": relu_rule, "max_pool": max_pool_rule}


def forward(layers: list[Layer], weights: list[tuple], x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """Return the logits of x (batch, *image shape), (batch, logits), and each layer's input."""
    inputs = []
    for layer, layer_weights in zip(layers, weights, strict=True):
        inputs.append(x)
        x = FORWARD[layer.kind](layer, layer_weights, x)
    return x, inputs


def backward(layers: list[Layer], weights: list[tuple], grad: jax.Array, image_inputs: list, reference_inputs: list
             ) -> jax.Array:
    """Map the head's multipliers (images, references, classes, logits) to the input's, (..., *image shape)."""
    steps = list(zip(layers, weights, image_inputs, reference_inputs, strict=True))
    for layer, layer_weights, x_in, r_in in reversed(steps):
        grad = RULES[layer.kind](layer, layer_weights, grad, x_in, r_in)
    return grad


def forward_logits(layers: list[Layer], weights: list[tuple], images: jax.Array) -> jax.Array:
    return forward(layers, weights, images)[0]


def chunk_values(layers: list[Layer], head: Callable, weights: list[tuple], images: jax.Array, references: jax.Array,
                 mask: jax.Array, classes: jax.Array | None) -> jax.Array:
    """Return the sum over references of multiplier * (image - reference), (images, *image shape, classes) float32.

    images (images, *image shape), references (references, *image shape), mask (references,): 1, or 0
    for the copies that pad the last chunk; classes: None, or (images, k) the classes to explain.
    """
    image_logits, image_inputs = forward(layers, weights, images)
    reference_logits, reference_inputs = forward(layers, weights, references)
    grad = head(image_logits, reference_logits)  # (images, references, classes, logits)
    if classes is not None:
        grad = jnp.take_along_axis(grad, classes[:, None, :, None], axis=2)  # (images, references, k, logits)
    grad = backward(layers, weights, grad, image_inputs, reference_inputs)  # (images, references, k, *image shape)
    difference = (images[:, None] - references[None]) * mask.reshape((1, -1) + (1,) * (images.ndim - 1))
    return jnp.einsum("nrk...,nr...->n...k", grad, difference, precision=HIGHEST)


def shap_softmax(image_logits: jax.Array, reference_logits: jax.Array) -> jax.Array:
    """shap's softmax rule, as deepshap.head.shap_softmax: logits (images, L) and (references, L) -> multipliers
    (images, references, classes, L), in float32 as shap computes it."""
    zx, zr = image_logits[:, None], reference_logits[None]  # (images, 1, L), (1, references, L)
    cx, cr = zx - zx.max(axis=-1, keepdims=True), zr - zr.max(axis=-1, keepdims=True)
    ex, er = jnp.exp(cx), jnp.exp(cr)
    sx, sr = ex.sum(axis=-1, keepdims=True), er.sum(axis=-1, keepdims=True)
    # shap's division rule (nonlinearity_2d) for evals / rsum, both varying.
    out11, out00, out10, out01 = ex / sx, er / sr, ex / sr, er / sx
    part_evals = 0.5 * (out11 - out01 + out10 - out00)
    part_sum = 0.5 * (out11 - out10 + out01 - out00)
    to_evals, to_sum = divide_or_zero(part_evals, ex - er), divide_or_zero(part_sum, sx - sr)
    # Class c's one-hot output gradient reaches evals[c] directly, and every evals[j] through the sum.
    eye = jnp.eye(zx.shape[-1], dtype=zx.dtype)
    grad_evals = to_sum[..., None] + eye * to_evals[..., None]  # (images, references, classes, L)
    delta_centered, delta_logits = cx - cr, zx - zr
    exp_rule = jnp.where(jnp.abs(delta_centered) < NONLINEAR_EPSILON, er, (ex - er) / nonzero(delta_centered))
    grad_centered = grad_evals * exp_rule[..., None, :]
    shift_rule = (delta_centered / nonzero(delta_logits))[..., None, :]
    close = (jnp.abs(delta_logits) < NONLINEAR_EPSILON)[..., None, :]
    return jnp.where(close, grad_centered, grad_centered * shift_rule)


def nonzero(delta: jax.Array) -> jax.Array:
    """delta with its zeros replaced by one, for a division whose result a where() then discards there."""
    return jnp.where(delta == 0, 1.0, delta)


def divide_or_zero(part: jax.Array, delta: jax.Array) -> jax.Array:
    return jnp.where(jnp.abs(delta) < LINEAR_EPSILON, 0.0, part / nonzero(delta))


def linear_head(image_logits: jax.Array, reference_logits: jax.Array) -> jax.Array:
    """The identity multipliers of the logits themselves, (images, references, L, L)."""
    logits = image_logits.shape[1]
    eye = jnp.eye(logits, dtype=image_logits.dtype)
    return jnp.broadcast_to(eye, (len(image_logits), len(reference_logits), logits, logits))


def shapley_softmax(image_logits: jax.Array, reference_logits: jax.Array) -> jax.Array:
    """The exact Shapley multipliers of the softmax, as deepshap.head.shapley_softmax, (images, references, classes, L),
    SHAPLEY_PAIRS_PER_STEP pairs at a time."""
    (images, logits), references = image_logits.shape, len(reference_logits)
    if logits > MAX_SHAPLEY_LOGITS:
        raise ValueError(f"the exact Shapley softmax rule takes at most {MAX_SHAPLEY_LOGITS} logits, got {logits}")
    pairs = (jnp.repeat(image_logits, references, axis=0), jnp.tile(reference_logits, (images, 1)))
    multipliers = lax.map(lambda pair: shapley_pair(*pair), pairs, batch_size=SHAPLEY_PAIRS_PER_STEP)
    return multipliers.reshape(images, references, logits, logits)


def shapley_pair(zx: jax.Array, zr: jax.Array) -> jax.Array:
    """The Shapley multipliers of one pair, (classes, L), every coalition S of the L logits at once.

    For a player i outside S, with e_j(S) = exp of the image's logit j if j is in S, else of the
    reference's, and R = sum over j != i of e_j(S) (positive terms only: nothing cancels), moving z_i
    from zr_i to zx_i and dividing by zx_i - zr_i adds w(|S|) secant_i / ((ex_i + R)(er_i + R)) times
    R to softmax_i's multiplier and times -e_c(S) to softmax_c's (c != i); secant_i is exp's secant.
    """
    logits = zx.shape[0]
    members = (np.arange(2**logits)[:, None] >> np.arange(logits)) & 1  # (coalitions, L) 0/1
    sizes = members.sum(axis=1)
    shapley_weights = np.array([math.factorial(k) * math.factorial(logits - k - 1) / math.factorial(logits)
                                for k in range(logits)])[np.minimum(sizes, logits - 1)]  # k! (n - k - 1)! / n!
    shift = jnp.maximum(zx.max(), zr.max())  # exp of shifted logits stays <= 1
    ex, er, delta = jnp.exp(zx - shift), jnp.exp(zr - shift), zx - zr
    # (exp(zx) - exp(zr)) / (zx - zr) of the shifted logits, without cancellation; exp(zr) where they are equal
    secant = jnp.where(delta == 0, er, er * jnp.expm1(delta) / nonzero(delta))
    values = jnp.where(members == 1, ex, er)  # (coalitions, L): e_c(S)
    others = jnp.asarray(1 - np.eye(logits), dtype=zx.dtype)
    rest = jnp.matmul(values, others, precision=HIGHEST)  # (coalitions, player i): R
    weight = jnp.asarray(np.where(members == 0, shapley_weights[:, None], 0.0), dtype=zx.dtype)  # i outside S only
    h = weight * secant / ((ex + rest) * (er + rest))  # (coalitions, player i)
    to_others = -jnp.matmul(h.T, values, precision=HIGHEST)  # (player i, class c)
    own = (h * rest).sum(axis=0)  # softmax_i's own change, summed apart: a small R is not lost beside er_i
    return jnp.where(jnp.eye(logits, dtype=bool), own[:, None], to_others).T


HEADS = {"shap": shap_softmax, "shapley": shapley_softmax, "logit": linear_head}
