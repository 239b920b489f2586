"""The plain backward rules: a table from Keras layer kind to its rule, that a caller can extend.

A model runs as a chain of steps (deepshap.network): each layer's own map, then its activation as a
step of its own. A step's rule maps the multipliers at its output, (references, classes, *output
shape) float64, to those at its input, for one explained image at a time:

    Linear steps (Dense, Conv2D, BatchNormalization, AveragePooling2D, Flatten, Reshape): the
        transpose of the map, which is the gradient (Captum's and shap's rule for linear layers).
    ReLU (the layer, or a layer's relu activation): shap's rescale rule, (relu(x) - relu(r)) / (x - r),
        the gradient where x ~ r.
    MaxPooling2D: shap's rule, in deepshap.pooling.
    Dropout: no step, the identity at inference.

Forward, each step gives float32 values, as shap.DeepExplainer's: Dense and Conv2D computed in float64 and
rounded once (an image's values then do not depend on the images beside it), the others TensorFlow's own ops
(a rule registered without a forward of its own runs the Keras layer, in float32).

A new kind of layer takes one call, its rule a function of the step, the multipliers at its output
and, where it reads them (needs_values=True), the values at its input:

    def global_average_pool(step, grad, image, references):
        # (refs, classes, channels) -> (refs, classes, rows, columns, channels)
        rows, columns, _ = step.input_shape
        return np.broadcast_to((grad / (rows * columns))[:, :, None, None], grad.shape[:2] + step.input_shape)

    deepshap.register_rule(keras.layers.GlobalAveragePooling2D, global_average_pool)

Which configurations of these layers are supported is deepshap.support's (a rule's configurations
are checked there, in CHECKS); which runs of rules run as compiled loops, deepshap.fused's.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from deepshap import pooling
from deepshap.head import NONLINEAR_EPSILON, where_close


def call_layer(step: "Step", x: tf.Tensor) -> tf.Tensor:
    """The default forward op: the Keras layer itself, at inference."""
    return step.layer(x, training=False)


def no_constants(layer: layers.Layer) -> dict:
    return {}


@dataclass(frozen=True)
class Rule:
    """How one kind of step runs, forward and backward.

    backward(step, grad, image, references) -> the multipliers at the step's input: grad (refs,
        classes, *output shape) float64 -> (refs, classes, *input shape) float64. image (*input shape)
        and references (refs, *input shape), float32, are the values at the step's input where
        needs_values, else None.
    forward(step, x): (n, *input shape) float32 -> (n, *output shape) float32, as a TensorFlow tensor.
    constants(layer) -> dict: what forward and backward read of the layer's weights, read once per Explainer,
        as step.constants (a model's weights may change between explainers).
    """

    backward: Callable
    needs_values: bool = False
    forward: Callable = call_layer
    constants: Callable = no_constants


@dataclass
class Step:
    """One step of the chain: a layer's own map, or its activation. Shapes are one image's."""

    layer: layers.Layer
    rule: Rule
    input_shape: tuple
    output_shape: tuple
    constants: dict = field(default_factory=dict)

    def forward(self, x: tf.Tensor) -> tf.Tensor:
        return self.rule.forward(self, x)

    def backward(self, grad: np.ndarray, image: np.ndarray | None, references: np.ndarray | None) -> np.ndarray:
        return self.rule.backward(self, grad, image, references)


def dense(step: Step, grad: np.ndarray, image: None, references: None) -> np.ndarray:
    # (refs, classes, units) -> (refs, classes, inputs): one product for all references and classes. Units whose
    # multipliers are all zero (dead against every reference) add nothing: the product skips them.
    kernel_t = step.constants["kernel_t"]  # (units, inputs) float64
    rows = grad.reshape(-1, grad.shape[-1])
    alive = np.flatnonzero(rows.any(axis=0))
    kernel_t = kernel_t if len(alive) == len(kernel_t) else kernel_t[alive]
    return (rows[:, alive] @ kernel_t).reshape(grad.shape[:-1] + (kernel_t.shape[1],))


# Dense and Conv2D forward: in float64, each output rounded once to float32. TensorFlow's float32 products and
# convolutions (oneDNN) round an image's outputs by the images beside it and its place among them (measured: the
# lab's Dense gave an image other bits in a batch of 1 than of 128 on an AVX-512 CPU; on an AVX2 one in batches of
# 1 to 16, and any row in reversed order; a 4 -> 6 channel conv on 6x6 other bits in a batch of 5 than of 2), and an
# image's values must not depend on the images explained with it. float64's own differences are in its last bits,
# which the rounding hides except where a value lies that close to a float32 rounding boundary.
def dense_forward(step: Step, x: tf.Tensor) -> tf.Tensor:
    # (n, inputs) float32 -> (n, units) float32: the map alone, the activation is a step of its own
    y = np.asarray(x, dtype=np.float64) @ step.constants["kernel_t"].T
    return tf.constant((y + step.constants["bias"]).astype(np.float32))


def dense_constants(layer: layers.Dense) -> dict:
    bias = layer.bias.numpy() if layer.use_bias else np.zeros(layer.units)
    return {"kernel_t": np.ascontiguousarray(layer.kernel.numpy().T, dtype=np.float64),  # (units, inputs)
            "bias": bias.astype(np.float64)}  # (units,)


def conv(step: Step, grad: np.ndarray, image: None, references: None) -> np.ndarray:
    # (refs, classes, *output) -> (refs, classes, *input): TensorFlow's transposed convolution, in float32 like the
    # forward pass (measured: 3.5x faster than in float64, where it is most of a two-block model's time).
    batch = grad.shape[:2]
    flat = tf.constant(grad.reshape((-1,) + grad.shape[2:]), dtype=tf.float32)
    result = tf.nn.conv2d_transpose(
        flat, step.constants["kernel"], output_shape=(flat.shape[0],) + step.input_shape,
        strides=(1,) + tuple(step.layer.strides) + (1,), padding=step.layer.padding.upper(),
    )
    return result.numpy().astype(np.float64).reshape(batch + step.input_shape)


def conv_forward(step: Step, x: tf.Tensor) -> tf.Tensor:
    # (n, *input shape) float32 -> (n, *output shape) float32: the map alone, the activation is a step of its own
    y = step.layer.convolution_op(tf.cast(x, tf.float64), step.constants["kernel64"])
    return tf.cast(y + step.constants["bias64"], tf.float32)


def conv_constants(layer: layers.Conv2D) -> dict:
    kernel = layer.kernel.numpy()  # (kernel rows, kernel columns, channels, filters)
    bias = layer.bias.numpy() if layer.use_bias else np.zeros(layer.filters)
    return {"kernel": tf.constant(kernel), "kernel64": tf.constant(kernel, dtype=tf.float64),
            "bias64": tf.constant(bias, dtype=tf.float64)}


def batch_norm(step: Step, grad: np.ndarray, image: None, references: None) -> np.ndarray:
    # (refs, classes, *shape) -> the same: at inference y = (x - moving_mean) * scale + offset, per channel.
    return grad * step.constants["scale"]


def batch_norm_constants(layer: layers.BatchNormalization) -> dict:
    gamma = layer.gamma.numpy() if layer.scale else 1.0
    return {"scale": (gamma / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)).astype(np.float64)}


def reshape(step: Step, grad: np.ndarray, image: None, references: None) -> np.ndarray:
    # (refs, classes, *output) -> (refs, classes, *input)
    return grad.reshape(grad.shape[:2] + step.input_shape)


def reshape_forward(step: Step, x: tf.Tensor) -> tf.Tensor:
    return tf.reshape(x, (-1,) + step.output_shape)


def relu(step: Step, grad: np.ndarray, image: np.ndarray, references: np.ndarray) -> np.ndarray:
    # (refs, classes, *shape) -> the same: shap's rescale rule per reference (refs, *shape), the same for every class.
    return grad * relu_multipliers(image[np.newaxis], references)[:, np.newaxis]


def relu_forward(step: Step, x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(x)


def relu_multipliers(image_in: np.ndarray, reference_in: np.ndarray) -> np.ndarray:
    """Return shap's ReLU rule, (relu(x) - relu(r)) / (x - r), or the reference's gradient where x ~ r."""
    delta = image_in - reference_in
    with np.errstate(divide="ignore", invalid="ignore"):
        rescale = (np.maximum(image_in, 0) - np.maximum(reference_in, 0)) / delta
    close = (reference_in > 0).astype(np.float32)
    return where_close(delta, NONLINEAR_EPSILON, close, rescale).astype(np.float32).astype(np.float64)


DENSE = Rule(dense, forward=dense_forward, constants=dense_constants)
CONV = Rule(conv, forward=conv_forward, constants=conv_constants)
BATCH_NORM = Rule(batch_norm, constants=batch_norm_constants)
RESHAPE = Rule(reshape, forward=reshape_forward)
RELU = Rule(relu, needs_values=True, forward=relu_forward)
MAX_POOL = Rule(pooling.max_pool, needs_values=True)
AVERAGE_POOL = Rule(pooling.average_pool)

# Keras layer kind -> its rule; None: the layer adds no step of its own (Dropout: the identity at
# inference; Activation: its activation's step alone). A layer takes the rule of its class or of the
# nearest class it derives from.
RULES: dict[type, Rule | None] = {
    layers.Dense: DENSE, layers.Conv2D: CONV, layers.BatchNormalization: BATCH_NORM,
    layers.MaxPooling2D: MAX_POOL, layers.AveragePooling2D: AVERAGE_POOL,
    layers.Flatten: RESHAPE, layers.Reshape: RESHAPE, layers.ReLU: RELU,
    layers.Dropout: None, layers.Activation: None,
}
# A layer's own activation (Dense, Conv2D, Activation), by Keras name -> the rule of its step; None: no step.
# The model's last Dense is the head: its softmax or linear activation is deepshap.head's.
ACTIVATIONS: dict[str, Rule | None] = {"relu": RELU, "linear": None}


def register_rule(layer_class: type, backward: Callable, *, needs_values: bool = False,
                  forward: Callable = call_layer, constants: Callable = no_constants) -> Rule:
    """Add (or replace) the rule of a Keras layer kind, for the explainers made after the call; return it.

    backward(step, grad, image, references): see Rule; forward defaults to the layer itself. Replacing
    a rule takes its steps off the compiled loops that stood for the old one (deepshap.fused matches
    steps by their rule). A configuration check for the kind goes in deepshap.support.CHECKS.
    """
    rule = Rule(backward, needs_values, forward, constants)
    RULES[layer_class] = rule
    return rule


def registered_kind(layer: layers.Layer) -> type | None:
    """Return the class in RULES that layer takes its rule from, or None."""
    return next((kind for kind in type(layer).__mro__ if kind in RULES), None)


def activation_name(layer: layers.Layer) -> str | None:
    """Return the Keras name of a layer's own activation (its function where not Keras' own), or None."""
    activation = getattr(layer, "activation", None)
    return None if activation is None else keras.activations.serialize(activation)
