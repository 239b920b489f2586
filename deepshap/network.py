"""A Keras model as a chain of steps, each with its forward op and its backward rule.

Forward: TensorFlow's own float32 ops, as shap.DeepExplainer runs them, keeping the inputs the
nonlinear rules need. Backward: each rule maps multipliers at a step's output, (references,
classes, *output shape) float64, to multipliers at its input, for one explained image at a time:

    Linear steps (Dense, Conv2D, BatchNormalization, AveragePooling2D, Flatten, Reshape): the
        transpose of the map, which is the gradient (Captum's and shap's rule for linear layers).
    ReLU: shap's rescale rule, (relu(x) - relu(r)) / (x - r), the gradient where x ~ r.
    MaxPooling2D: shap's rule, the output's change routed to each side's argmax, divided there by
        the input's change.
    Dropout: nothing at inference.

The model's last Dense is the head: its logits are explained through a rule of deepshap.head. Each
block Conv2D (stride 1) -> [BatchNormalization] -> ReLU -> MaxPooling2D (valid) runs compiled, as one
loop of deepshap.kernels; the one on the input (the lab's first block, valid padding) is fused with
the input's (image - reference) and the sum over references. So does the model's top, Dense -> ReLU
-> the head, whose product is most of the lab's time (deepshap.kernels.dense_top_backward).
"""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from deepshap.head import LINEAR_EPSILON, NONLINEAR_EPSILON, where_close
from deepshap.kernels import block_backward, dense_top_backward


class UnsupportedModelError(ValueError):
    """The model has a layer or activation the engine has no rule for; shap.DeepExplainer may handle it."""


def unsupported(layer, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"the fast engine does not support layer '{layer.name}' ({layer.__class__.__name__}): {why}"
    )


class Step:
    """One step of the chain. needs_values: the backward rule needs the step's input values."""

    needs_values = False

    def forward(self, x: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def backward(self, grad: np.ndarray, image: np.ndarray | None, references: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Dense(Step):
    layer: layers.Dense

    def __post_init__(self):
        self.kernel_t = np.ascontiguousarray(self.layer.kernel.numpy().T, dtype=np.float64)  # (out, in)

    def forward(self, x):
        y = tf.matmul(x, self.layer.kernel)
        return y + self.layer.bias if self.layer.use_bias else y

    def backward(self, grad, image, references):
        # One product for all references and classes: (refs * classes, out) @ (out, in). Units whose
        # multipliers are all zero (dead against every reference) add nothing: the product skips them.
        rows = grad.reshape(-1, grad.shape[-1])
        alive = np.flatnonzero(rows.any(axis=0))
        kernel_t = self.kernel_t if len(alive) == len(self.kernel_t) else self.kernel_t[alive]
        return (rows[:, alive] @ kernel_t).reshape(grad.shape[:-1] + (kernel_t.shape[1],))


@dataclass
class Conv(Step):
    layer: layers.Conv2D
    input_shape: tuple  # (rows, columns, channels) of one image

    def __post_init__(self):
        self.kernel = tf.constant(self.layer.kernel.numpy())  # (kh, kw, in, out)

    def forward(self, x):
        y = self.layer.convolution_op(x, self.layer.kernel)
        return y + tf.reshape(self.layer.bias, (1, 1, 1, -1)) if self.layer.use_bias else y

    def backward(self, grad, image, references):
        # TensorFlow's transposed convolution, in float32 like the forward pass (measured: 3.5x faster
        # than in float64, where it is most of a two-block model's time); float64 again after it.
        batch = grad.shape[:2]
        flat = tf.constant(grad.reshape((-1,) + grad.shape[2:]), dtype=tf.float32)
        result = tf.nn.conv2d_transpose(
            flat, self.kernel, output_shape=(flat.shape[0],) + self.input_shape,
            strides=(1,) + tuple(self.layer.strides) + (1,), padding=self.layer.padding.upper(),
        )
        return result.numpy().astype(np.float64).reshape(batch + self.input_shape)


@dataclass
class BatchNorm(Step):
    layer: layers.BatchNormalization

    def __post_init__(self):
        # At inference: y = (x - moving_mean) * scale + offset, per channel.
        layer = self.layer
        gamma = layer.gamma.numpy() if layer.scale else 1.0
        self.scale = (gamma / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)).astype(np.float64)

    def forward(self, x):
        return self.layer(x, training=False)

    def backward(self, grad, image, references):
        return grad * self.scale


@dataclass
class AveragePool(Step):
    layer: layers.AveragePooling2D
    input_shape: tuple

    def forward(self, x):
        return self.layer(x)

    def backward(self, grad, image, references):
        batch = grad.shape[:2]
        zeros = tf.zeros((int(np.prod(batch)),) + self.input_shape, dtype=tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(zeros)
            pooled = tf.nn.avg_pool2d(zeros, self.layer.pool_size, self.layer.strides, self.layer.padding.upper())
        flat = grad.reshape((-1,) + grad.shape[2:])
        return tape.gradient(pooled, zeros, output_gradients=tf.constant(flat)).numpy().reshape(batch + self.input_shape)


@dataclass
class Reshape(Step):
    input_shape: tuple
    output_shape: tuple

    def forward(self, x):
        return tf.reshape(x, (-1,) + self.output_shape)

    def backward(self, grad, image, references):
        return grad.reshape(grad.shape[:2] + self.input_shape)


class Relu(Step):
    needs_values = True

    def forward(self, x):
        return tf.nn.relu(x)

    def backward(self, grad, image, references):
        rule = relu_multipliers(image[np.newaxis], references)  # (refs, *shape)
        return grad * rule[:, np.newaxis]


@dataclass
class MaxPool(Step):
    layer: layers.MaxPooling2D
    input_shape: tuple
    needs_values = True

    def forward(self, x):
        return self.layer(x)

    def windows(self, values: np.ndarray) -> np.ndarray:
        """Return values (n, rows, columns, channels) as (n, out rows, out columns, channels, window) windows.

        Windows do not overlap (strides = pool size); 'same' padding pads with -inf as TensorFlow does.
        """
        (pr, pc), (rows, columns, channels) = self.layer.pool_size, self.input_shape
        out_rows, out_columns = self.output_size()
        pad_rows, pad_columns = out_rows * pr - rows, out_columns * pc - columns
        padded = np.full((len(values), out_rows * pr, out_columns * pc, channels), -np.inf, dtype=values.dtype)
        top, left = max(pad_rows, 0) // 2, max(pad_columns, 0) // 2
        padded[:, top : top + rows, left : left + columns] = values[:, : out_rows * pr, : out_columns * pc]
        shaped = padded.reshape(len(values), out_rows, pr, out_columns, pc, channels)
        return shaped.transpose(0, 1, 3, 5, 2, 4).reshape(len(values), out_rows, out_columns, channels, pr * pc)

    def output_size(self) -> tuple[int, int]:
        (pr, pc), (rows, columns, _) = self.layer.pool_size, self.input_shape
        if self.layer.padding == "same":
            return -(-rows // pr), -(-columns // pc)
        return rows // pr, columns // pc

    def unwindow(self, windows: np.ndarray) -> np.ndarray:
        """Return window-shaped values (n, out rows, out columns, channels, window) in the input's layout."""
        (pr, pc), (rows, columns, channels) = self.layer.pool_size, self.input_shape
        out_rows, out_columns = self.output_size()
        n = len(windows)
        shaped = windows.reshape(n, out_rows, out_columns, channels, pr, pc).transpose(0, 1, 4, 2, 5, 3)
        padded = shaped.reshape(n, out_rows * pr, out_columns * pc, channels)
        top, left = max(out_rows * pr - rows, 0) // 2, max(out_columns * pc - columns, 0) // 2
        result = np.zeros((n, rows, columns, channels), dtype=windows.dtype)
        kept_rows, kept_columns = min(rows, out_rows * pr), min(columns, out_columns * pc)
        result[:, :kept_rows, :kept_columns] = padded[:, top : top + kept_rows, left : left + kept_columns]
        return result

    def input_factors(self, image: np.ndarray, references: np.ndarray) -> np.ndarray:
        """Return, per reference and input position, what multiplies the multiplier of its window's output.

        shap's rule: the output's change is split in max(xo, ro) - ro, routed to the image's argmax, and
        xo - max(xo, ro), routed to the reference's (TensorFlow's first argmax), each then divided by
        the input's change there (zero where it is below 1e-7). Windows do not overlap, so each input
        position takes one window's multiplier: (references, rows, columns, channels) float64.
        """
        x_windows, r_windows = self.windows(image[np.newaxis]), self.windows(references)
        x_out, r_out = x_windows.max(axis=-1), r_windows.max(axis=-1)  # (1 or refs, out rows, out columns, channels)
        cross = np.maximum(x_out, r_out)
        positions = np.arange(x_windows.shape[-1])
        to_image = (positions == x_windows.argmax(axis=-1)[..., np.newaxis]) * (cross - r_out)[..., np.newaxis]
        to_reference = (positions == r_windows.argmax(axis=-1)[..., np.newaxis]) * (x_out - cross)[..., np.newaxis]
        routed = self.unwindow((to_image + to_reference).astype(np.float64))
        delta = (image[np.newaxis] - references).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return where_close(delta, LINEAR_EPSILON, 0.0, routed / delta)

    def backward(self, grad, image, references):
        # Each window's multiplier times the factors of its positions, written in one pass through a
        # (out rows, pool rows, out columns, pool columns) view of the (padded) input.
        (pr, pc), (rows, columns, channels) = self.layer.pool_size, self.input_shape
        out_rows, out_columns = self.output_size()
        top, left = max(out_rows * pr - rows, 0) // 2, max(out_columns * pc - columns, 0) // 2
        big = (max(rows, out_rows * pr), max(columns, out_columns * pc), channels)
        refs, classes = grad.shape[:2]
        factors = np.zeros((refs,) + big)
        factors[:, top : top + rows, left : left + columns] = self.input_factors(image, references)
        result = np.zeros((refs, classes) + big)
        block = result[:, :, : out_rows * pr, : out_columns * pc].reshape(refs, classes, out_rows, pr, out_columns, pc,
                                                                          channels)
        factor_block = factors[:, np.newaxis, : out_rows * pr, : out_columns * pc].reshape(
            refs, 1, out_rows, pr, out_columns, pc, channels)
        np.multiply(grad[:, :, :, np.newaxis, :, np.newaxis], factor_block, out=block)
        return result[:, :, top : top + rows, left : left + columns]


def relu_multipliers(image_in: np.ndarray, reference_in: np.ndarray) -> np.ndarray:
    """Return shap's ReLU rule, (relu(x) - relu(r)) / (x - r), or the reference's gradient where x ~ r."""
    delta = image_in - reference_in
    with np.errstate(divide="ignore", invalid="ignore"):
        rescale = (np.maximum(image_in, 0) - np.maximum(reference_in, 0)) / delta
    close = (reference_in > 0).astype(np.float32)
    return where_close(delta, NONLINEAR_EPSILON, close, rescale).astype(np.float32).astype(np.float64)


class Network:
    """A supported model as a chain of steps, with its head and, where it has one, its fused first block."""

    def __init__(self, model: keras.Model, fuse: bool = True):
        self.steps, self.head = chain(model)
        self.num_classes = self.steps[-1].layer.units
        # Conv blocks run compiled (deepshap.kernels): the one at the input, if any, is fused with the
        # input's (image - reference) and the sum over references; the others map multipliers.
        self.fused = None
        self.blocks = {}  # {index of the block's last step: block}, inside the model
        index = 0
        while fuse and index < len(self.steps):
            block = conv_block(self.steps, index)
            if block is None:
                index += 1
            elif index == 0 and block["padding"] == (0, 0):
                self.fused, index = block, block["end"] + 1
            else:
                self.blocks[block["end"]], index = block, block["end"] + 1
        self.first_generic = self.fused["end"] + 1 if self.fused else 0
        # The model's top, Dense -> ReLU -> the head's Dense, runs compiled too (deepshap.kernels).
        self.top = top(self.steps) if fuse and len(self.steps) - 3 >= self.first_generic else None
        inside = {i for block in self.blocks.values() for i in range(block["start"], block["end"] + 1)}
        # Steps whose inputs a backward rule reads, and the ReLU inputs of the compiled blocks.
        self.kept = {i for i, step in enumerate(self.steps) if step.needs_values and i >= self.first_generic
                     and i not in inside}
        self.kept |= {block["relu"] for block in [self.fused, *self.blocks.values()] if block}

    def backward(self, grad: np.ndarray, image: dict, references: dict, out: np.ndarray | None = None) -> np.ndarray:
        """Return the multipliers at the first generic step's input, (refs, classes, *its input shape) float64.

        grad (refs, classes, logits): the head's multipliers for one image; image and references: the
        forward values of that image (indexed for it) and of the references. out: None, or an array
        (refs, classes, size of the input) to return them in (the top writes there directly when
        only reshapes follow it, saving a copy of the largest array).
        """
        index = len(self.steps) - 1
        if self.top:
            relu = self.top["relu"]
            rule = relu_multipliers(image[relu][np.newaxis], references[relu])
            grad = dense_top_backward(grad, image[relu] > 0, rule, self.top["hidden"], self.top["head"],
                                      out if self.only_reshapes_below(relu - 1) else None)
            index = relu - 2
        while index >= self.first_generic:
            block = self.blocks.get(index)
            if block:
                relu = block["relu"]
                grad = block_backward(grad, image[relu], references[relu], block["kernel"], block["padding"],
                                      block["pool_size"], block["input_shape"],
                                      out if self.only_reshapes_below(block["start"]) else None)
                index = block["start"] - 1
                continue
            step = self.steps[index]
            grad = step.backward(grad, image[index] if step.needs_values else None, references.get(index))
            index -= 1
        if out is None:
            return grad
        if not np.shares_memory(grad, out):
            out[...] = grad.reshape(out.shape)
        return out

    def only_reshapes_below(self, index: int) -> bool:
        """Return whether the generic steps below steps[index] are all reshapes: its result is the backward's."""
        return all(isinstance(step, Reshape) for step in self.steps[self.first_generic : index])

    def forward(self, images: np.ndarray) -> dict:
        """Return {step index: its input values} for the steps that need them, and "logits": float32.

        Each image's values do not depend on the batch it is in (checked for batches of 2 to 128),
        except that TensorFlow rounds a batch of one differently: it runs as two.
        """
        count = len(images)
        x = tf.constant(np.concatenate([images, images]) if count == 1 else images)
        values = {}
        for index, step in enumerate(self.steps):
            if index in self.kept:
                values[index] = x.numpy()[:count]
            x = step.forward(x)
        values["logits"] = x.numpy()[:count]
        return values


ACTIVATION_STEPS = {"relu": [Relu], "linear": []}


def activation_steps(layer, is_last: bool) -> list[Step]:
    """Return the steps of a layer's own activation; softmax only on the last Dense (the head)."""
    name = keras.activations.serialize(layer.activation)  # a name for Keras' own activations
    if is_last and isinstance(layer, layers.Dense) and name in ("softmax", "linear"):
        return []
    if not isinstance(name, str) or name not in ACTIVATION_STEPS:
        raise unsupported(layer, f"activation '{name}' has no rule here; explain.engine: shap handles it")
    return [step() for step in ACTIVATION_STEPS[name]]


def layer_steps(layer, input_shape: tuple, output_shape: tuple, is_last: bool) -> list[Step]:
    """Return the steps of one Keras layer, or fail naming it."""
    if isinstance(layer, layers.Dropout):
        return []  # the identity at inference
    if isinstance(layer, layers.Dense):
        return [Dense(layer)] + activation_steps(layer, is_last)
    if isinstance(layer, layers.Conv2D) and type(layer) is layers.Conv2D:
        if tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1 or layer.data_format != "channels_last":
            raise unsupported(layer, "only dilation 1, one group, channels last; explain.engine: shap handles it")
        return [Conv(layer, input_shape)] + activation_steps(layer, is_last)
    if isinstance(layer, layers.BatchNormalization):
        if layer.axis not in (-1, len(input_shape)):
            raise unsupported(layer, "only the channels axis; explain.engine: shap handles it")
        return [BatchNorm(layer)]
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        if tuple(layer.strides) != tuple(layer.pool_size) or layer.data_format != "channels_last":
            raise unsupported(layer, "only strides equal to the pool size, channels last; explain.engine: shap "
                                     "handles it")
        kind = MaxPool if isinstance(layer, layers.MaxPooling2D) else AveragePool
        return [kind(layer, input_shape)]
    if isinstance(layer, (layers.Flatten, layers.Reshape)):
        return [Reshape(input_shape, output_shape)]
    if isinstance(layer, layers.ReLU) and layer.max_value is None and not layer.negative_slope and not layer.threshold:
        return [Relu()]
    if isinstance(layer, layers.Activation):
        return activation_steps(layer, is_last=False)
    raise unsupported(layer, "no rule for this layer; explain.engine: shap handles it")


def chain(model: keras.Model) -> tuple[list[Step], str]:
    """Return the model's steps and its head's activation ("softmax" or "linear")."""
    model_layers = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    if not model_layers or not isinstance(model_layers[-1], layers.Dense):
        raise UnsupportedModelError("the fast engine needs a Dense output layer (the logits); explain.engine: shap "
                                    "handles other models")
    steps = []
    for position, layer in enumerate(model_layers):
        input_shape, output_shape = tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:])
        steps.extend(layer_steps(layer, input_shape, output_shape, is_last=position == len(model_layers) - 1))
    head = keras.activations.serialize(model_layers[-1].activation)
    return steps, "softmax" if head == "softmax" else "linear"


def conv_block(steps: list[Step], start: int) -> dict | None:
    """Return the conv block starting at steps[start], or None: Conv2D (stride 1) -> [BatchNorm] -> ReLU ->
    MaxPooling2D (valid), as {"start", "end" (the pool's index), "relu" (index), "kernel" (filters, rows,
    columns, channels) float64, "padding" (top, left), "pool_size", "input_shape"}."""
    conv = steps[start]
    if not (isinstance(conv, Conv) and tuple(conv.layer.strides) == (1, 1)):
        return None
    kernel = conv.layer.kernel.numpy().astype(np.float64)  # (rows, columns, channels, filters)
    index = start + 1
    if index < len(steps) and isinstance(steps[index], BatchNorm):
        kernel = kernel * steps[index].scale  # the transpose of conv then scale is that of the scaled conv
        index += 1
    if not (index + 1 < len(steps) and isinstance(steps[index], Relu) and isinstance(steps[index + 1], MaxPool)
            and steps[index + 1].layer.padding == "valid"):
        return None
    # TensorFlow's 'same' padding puts the odd pixel at the bottom and right.
    padding = (0, 0) if conv.layer.padding == "valid" else ((kernel.shape[0] - 1) // 2, (kernel.shape[1] - 1) // 2)
    pool = steps[index + 1]
    return {"start": start, "end": index + 1, "relu": index, "kernel": np.ascontiguousarray(np.moveaxis(kernel, -1, 0)),
            "padding": padding, "pool_size": tuple(pool.layer.pool_size), "input_shape": conv.input_shape,
            "output_size": int(np.prod(pool.output_size())) * kernel.shape[-1]}


def top(steps: list[Step]) -> dict | None:
    """Return the model's top if its last three steps (it has three or more) are Dense -> ReLU -> the
    head's Dense, or None: {"relu" (index), "hidden" (units, inputs) float32, "head" (logits, units)
    float64}, the kernels transposed."""
    hidden, relu, head = steps[-3:]
    if not (isinstance(hidden, Dense) and isinstance(relu, Relu) and isinstance(head, Dense)):
        return None
    return {"relu": len(steps) - 2, "hidden": np.ascontiguousarray(hidden.kernel_t, dtype=np.float32),
            "head": head.kernel_t}
