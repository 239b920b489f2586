"""A fast, exact replacement for shap.DeepExplainer on the lab's family of CNNs.

shap.DeepExplainer (shap/explainers/_deep/deep_tf.py) computes DeepLIFT "rescale" multipliers
of each model output with respect to the input, for the image against every background image,
and averages multiplier * (image - reference) over the background. It overrides TensorFlow's
gradients of the nonlinear ops and differentiates a joint batch of (image repeated, background)
once per class. This module computes the same numbers for the family

    Input -> Conv2D(relu, valid) -> MaxPooling2D -> Flatten -> Dense(relu) -> Dense(softmax)

with shap's own rules, but
- runs each reference's forward pass once for all images and classes,
- carries all images, references and classes of a chunk through one matrix product,
- leaves out the dense units that are dead for every image and the whole chunk,
- routes the max-pool, rescales the conv ReLU and transposes the conv in one compiled loop
  that pairs each reference with every image while the reference is in cache,
- streams the background in chunks, so memory does not grow with the background.

The steps that decide shap's values to the last bit near a cancellation (the logits, exp and
sums of its softmax rule) are computed with TensorFlow, in float32, in shap's order.
"""

from collections.abc import Iterator

import keras
import numba
import numpy as np
import tensorflow as tf
from keras import layers

from stages.common import PipelineError

# shap's thresholds below which a difference counts as zero (deep_tf.py).
NONLINEAR_EPSILON = 1e-6  # ReLU, exp and the softmax rescale: fall back to the gradient
LINEAR_EPSILON = 1e-7  # max-pool and division: the multiplier is zero
THREAD_BLOCKS = 8  # blocks of references the compiled loop spreads over the cores


class DenseReluCnn:
    """The weights of a supported model, and its forward pass with every intermediate value."""

    def __init__(self, model: keras.Model):
        conv, pool, dense, output = supported_layers(model)
        # (filters, kernel rows, kernel columns, channels): one filter's taps together
        self.conv_kernel_t = np.ascontiguousarray(np.moveaxis(conv.kernel.numpy(), -1, 0))
        self.pool_size = tuple(pool.pool_size)
        self.dense_kernel_t = np.ascontiguousarray(dense.kernel.numpy().T)  # (units, flattened pool output)
        self.output_kernel_t = np.ascontiguousarray(output.kernel.numpy().T)  # (classes, units)
        self.num_classes = output.units
        self._layers = conv, pool, dense, output

    @tf.function(reduce_retracing=True)
    def _forward(self, images):
        conv, pool, dense, output = self._layers
        # The same ops as the layers' own call(), split where shap needs the pre-activations.
        conv_in = conv.convolution_op(images, conv.kernel) + tf.reshape(conv.bias, (1, 1, 1, -1))
        pooled = pool(tf.nn.relu(conv_in))
        dense_in = tf.matmul(tf.reshape(pooled, (tf.shape(pooled)[0], -1)), dense.kernel) + dense.bias
        logits = tf.matmul(tf.nn.relu(dense_in), output.kernel) + output.bias
        return conv_in, dense_in, logits

    def forward(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Return the intermediate values of images."""
        # TensorFlow rounds a batch of one differently from shap's batches: run it as two.
        batch = np.concatenate([images, images]) if len(images) == 1 else images
        names = ("conv_in", "dense_in", "logits")
        return {name: value.numpy()[: len(images)] for name, value in zip(names, self._forward(tf.constant(batch)))}


def supported_layers(model: keras.Model) -> tuple:
    """Return (conv, pool, dense, output) of a model of the supported family, or fail naming the first misfit."""
    expected = [
        (layers.InputLayer, lambda layer: True, "an input"),
        (layers.Conv2D, lambda layer: layer.activation is keras.activations.relu and layer.padding == "valid"
         and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1) and layer.use_bias,
         "a Conv2D with relu, valid padding, stride 1 and a bias"),
        (layers.MaxPooling2D, lambda layer: layer.padding == "valid" and tuple(layer.strides) == tuple(layer.pool_size),
         "a MaxPooling2D with valid padding and strides equal to its pool size"),
        (layers.Flatten, lambda layer: True, "a Flatten"),
        (layers.Dense, lambda layer: layer.activation is keras.activations.relu and layer.use_bias,
         "a Dense with relu and a bias"),
        (layers.Dense, lambda layer: layer.activation is keras.activations.softmax and layer.use_bias,
         "a Dense with softmax and a bias"),
    ]
    model_layers = list(model.layers)
    for position, (kind, fits, description) in enumerate(expected):
        if position >= len(model_layers):
            raise PipelineError(f"the fast engine needs {description} after the last layer; use explain.engine: shap")
        layer = model_layers[position]
        if not (isinstance(layer, kind) and fits(layer)):
            raise PipelineError(
                f"the fast engine does not support layer '{layer.name}' ({layer.__class__.__name__}) where it "
                f"expects {description}; set explain.engine: shap in params.yaml"
            )
    if len(model_layers) > len(expected):
        extra = model_layers[len(expected)]
        raise PipelineError(
            f"the fast engine does not support layer '{extra.name}' ({extra.__class__.__name__}) after the softmax; "
            f"set explain.engine: shap in params.yaml"
        )
    return tuple(model_layers[1:3] + model_layers[4:6])


def where_close(delta: np.ndarray, epsilon: float, close, far) -> np.ndarray:
    return np.where(np.abs(delta) < epsilon, close, far)


def softmax_multipliers(image_logits: np.ndarray, reference_logits: np.ndarray) -> np.ndarray:
    """Return shap's multipliers of every class's probability w.r.t. every logit, (images, references, classes, logits).

    shap rewrites softmax as exp(z - max z) / sum(exp(z - max z)) and applies its exp, sum and
    division rules, then rescales by (centered delta / delta). All in float32, in shap's order.
    """
    zx, zr = image_logits, reference_logits  # (images, logits), (references, logits)
    cx = (zx - zx.max(axis=1, keepdims=True)).astype(np.float32)
    cr = (zr - zr.max(axis=1, keepdims=True)).astype(np.float32)
    ex, er = tf.exp(cx).numpy(), tf.exp(cr).numpy()
    sx = tf.reduce_sum(ex, axis=1, keepdims=True).numpy()
    sr = tf.reduce_sum(er, axis=1, keepdims=True).numpy()
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
        return np.where(close, grad_centered, grad_centered * shift_rule).astype(np.float32)


def relu_multipliers(image_in: np.ndarray, reference_in: np.ndarray) -> np.ndarray:
    """Return shap's ReLU rule, (relu(x) - relu(r)) / (x - r), or the reference's gradient where x ~ r."""
    delta = image_in - reference_in
    with np.errstate(divide="ignore", invalid="ignore"):
        rescale = (np.maximum(image_in, 0) - np.maximum(reference_in, 0)) / delta
    return where_close(delta, NONLINEAR_EPSILON, (reference_in > 0).astype(np.float32), rescale).astype(np.float32)


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


def _pool_conv_backward(pooled_grad, *args):
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
    @numba.njit(parallel=True, fastmath=True, cache=True)
    def pool_conv_backward(pooled_grad, images, image_conv_in, references, reference_conv_in, kernel,
                           pool_rows, pool_columns, totals):
        """Add sum over references of multiplier * (image - reference) to totals (images, rows, columns, channels, classes).

        pooled_grad (images, references, classes, pooled rows * pooled columns * filters) is each
        class's multiplier at the max-pool output. shap's max-pool rule sends it, times
        (x_out - r_out), to the image's argmax if x_out >= r_out and to the reference's otherwise,
        divided there by the difference of the pool inputs; the conv ReLU rule and the conv's
        transpose (kernel as (filters, kernel rows, kernel columns, channels)) follow. Each thread
        takes a block of references and pairs each with every image while it is in cache; classes
        are the innermost axis of the scatter, so its loops vectorise.
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
            grad_in = np.zeros((rows, columns, channels, classes), dtype=np.float32)
            flat = grad_in.reshape(-1)
            value = np.zeros(classes, dtype=np.float32)
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
                                x_out, r_out = image_max[k, qi, qj, f], reference_max[qi, qj, f]
                                scale = x_out - r_out
                                if scale == 0:
                                    continue
                                if x_out >= r_out:
                                    i, j = image_at[k, qi, qj, f, 0], image_at[k, qi, qj, f, 1]
                                else:
                                    i, j = reference_at[qi, qj, f, 0], reference_at[qi, qj, f, 1]
                                x_in, r_in = image[i, j, f], reference[i, j, f]
                                delta = max(x_in, np.float32(0.0)) - max(r_in, np.float32(0.0))
                                if abs(delta) < LINEAR_EPSILON:
                                    continue
                                delta_in = x_in - r_in
                                if abs(delta_in) < NONLINEAR_EPSILON:
                                    relu = np.float32(1.0) if r_in > 0 else np.float32(0.0)
                                else:
                                    relu = np.float32(delta / delta_in)
                                p = (qi * qw + qj) * filters + f
                                for c in range(classes):
                                    value[c] = np.float32(np.float32(grad[c, p] * scale) / delta) * relu
                                for a in range(kh):
                                    for b in range(kw):
                                        for ch in range(channels):
                                            weight = kernel[f, a, b, ch]
                                            base = (((i + a) * columns + j + b) * channels + ch) * classes
                                            for c in range(classes):
                                                flat[base + c] += weight * value[c]
                    for i in range(rows):
                        for j in range(columns):
                            for ch in range(channels):
                                difference = images[k, i, j, ch] - references[r, i, j, ch]
                                for c in range(classes):
                                    partial[block, k, i, j, ch, c] += grad_in[i, j, ch, c] * difference
        for block in range(blocks):
            totals += partial[block]
    return pool_conv_backward


class FastDeepExplainer:
    """shap.DeepExplainer's values for a supported model, the background streamed in chunks."""

    def __init__(self, model: keras.Model, chunk_size: int):
        self.network = DenseReluCnn(model)
        self.chunk_size = chunk_size

    def chunks(self, background: np.ndarray) -> Iterator[tuple[np.ndarray, dict]]:
        """Yield (references, their forward values) a chunk at a time."""
        for start in range(0, len(background), self.chunk_size):
            references = np.ascontiguousarray(background[start : start + self.chunk_size], dtype=np.float32)
            yield references, self.network.forward(references)

    def add_chunk(self, totals: np.ndarray, images: np.ndarray, x: dict, references: np.ndarray, r: dict,
                  buffer: np.ndarray) -> None:
        """Add one chunk's sum of multiplier * (image - reference) to totals (images, rows, columns, channels, classes)."""
        network = self.network
        grad_logits = softmax_multipliers(x["logits"], r["logits"])  # (images, refs, classes, logits)
        dense_rule = relu_multipliers(x["dense_in"][:, np.newaxis], r["dense_in"])  # (images, refs, units)
        alive = np.flatnonzero(dense_rule.any(axis=(0, 1)))  # units dead for every image and reference add nothing
        grad_dense = (grad_logits @ network.output_kernel_t[:, alive]) * dense_rule[:, :, np.newaxis, alive]
        # One matrix product for all images, references and classes: (.., units) @ (units, pool outputs),
        # into a buffer reused across chunks (measured: a fresh one per chunk made the product 1.6x slower).
        grad_dense = grad_dense.reshape(-1, len(alive))
        pooled_grad = np.matmul(grad_dense, network.dense_kernel_t[alive], out=buffer[: len(grad_dense)])
        _pool_conv_backward(
            pooled_grad.reshape(len(images), len(references), network.num_classes, -1), images, x["conv_in"],
            references, r["conv_in"], network.conv_kernel_t, *network.pool_size, totals,
        )

    def shap_values(self, images: np.ndarray, background: np.ndarray, progress=None) -> np.ndarray:
        """Return the values in shap's layout, (images, rows, columns, channels, classes)."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        image_values = self.network.forward(images)
        totals = np.zeros(images.shape + (self.network.num_classes,))
        rows = len(images) * min(self.chunk_size, len(background)) * self.network.num_classes
        buffer = np.empty((rows, self.network.dense_kernel_t.shape[1]), dtype=np.float32)
        for references, reference_values in self.chunks(background):
            self.add_chunk(totals, images, image_values, references, reference_values, buffer)
            if progress is not None:
                progress(len(references))
        return (totals / len(background)).astype(np.float32)
