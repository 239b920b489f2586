"""Which Keras models the engine supports: the checks, apart from the rules, and the one error that names the layer.

A model is supported when its last layer is a Dense (the logits, with a softmax or linear activation:
the head, deepshap.head), and each other layer has a rule in deepshap.rules.RULES, a configuration
its kind's check in CHECKS accepts, and an activation with a rule in deepshap.rules.ACTIVATIONS.
A caller who registers a rule can add its kind's check here.
"""

from collections.abc import Callable

from keras import layers

from deepshap.errors import UnsupportedModelError
from deepshap.rules import ACTIVATIONS, activation_name, registered_kind

HEAD_ACTIVATIONS = ("softmax", "linear")


def unsupported(layer: layers.Layer, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"the fast engine does not support layer '{layer.name}' ({layer.__class__.__name__}): {why}"
    )


def conv_check(layer: layers.Conv2D) -> str | None:
    if type(layer) is not layers.Conv2D:
        return "no rule for this layer, a kind of Conv2D whose map may differ"
    if tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1 or layer.data_format != "channels_last":
        return "only dilation 1, one group, channels last"
    return None


def batch_norm_check(layer: layers.BatchNormalization) -> str | None:
    if layer.axis not in (-1, len(layer.input.shape) - 1):
        return "only the channels axis"
    return None


def pooling_check(layer: layers.MaxPooling2D | layers.AveragePooling2D) -> str | None:
    if tuple(layer.strides) != tuple(layer.pool_size) or layer.data_format != "channels_last":
        return "only strides equal to the pool size, channels last"
    return None


def relu_check(layer: layers.ReLU) -> str | None:
    if layer.max_value is not None or layer.negative_slope or layer.threshold:
        return "only the plain ReLU, without max_value, negative_slope or threshold"
    return None


# Keras layer kind (a key of deepshap.rules.RULES) -> a check of its configuration: why it is not
# supported, or None.
CHECKS: dict[type, Callable[[layers.Layer], str | None]] = {
    layers.Conv2D: conv_check, layers.BatchNormalization: batch_norm_check,
    layers.MaxPooling2D: pooling_check, layers.AveragePooling2D: pooling_check, layers.ReLU: relu_check,
}


def check_layer(layer: layers.Layer, is_head: bool = False) -> None:
    """Fail naming the layer where the engine has no rule for it, its configuration or its activation."""
    kind = registered_kind(layer)
    if kind is None:
        raise unsupported(layer, "no rule for this layer")
    why = CHECKS[kind](layer) if kind in CHECKS else None
    if why:
        raise unsupported(layer, why)
    name = activation_name(layer)
    if is_head:
        if name not in HEAD_ACTIVATIONS:
            raise unsupported(layer, f"the output layer's activation '{name}': only {' or '.join(HEAD_ACTIVATIONS)}")
    elif name is not None and (not isinstance(name, str) or name not in ACTIVATIONS):
        raise unsupported(layer, f"activation '{name}' has no rule here")


def check_model(model_layers: list[layers.Layer]) -> None:
    """Fail naming the first layer the engine does not support; model_layers without the InputLayer."""
    if not model_layers or not isinstance(model_layers[-1], layers.Dense):
        raise UnsupportedModelError("the fast engine needs a Dense output layer (the logits); explain.engine: shap "
                                    "handles other models")
    for position, layer in enumerate(model_layers):
        check_layer(layer, is_head=position == len(model_layers) - 1)
