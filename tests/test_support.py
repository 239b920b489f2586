"""support: which layers and configurations the engine takes, and the one error naming the layer that it does not."""

import keras
import pytest
from keras import layers

from deepshap import UnsupportedModelError
from deepshap.support import check_model


def model_layers(*middle, output=None) -> list:
    """Return the layers (without the InputLayer) of a model on 12x12 images: middle, then a Dense head."""
    x = inputs = keras.Input(shape=(12, 12, 1))
    for layer in middle:
        x = layer(x)
    if output is None:
        output = layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, output(layers.Flatten()(x) if len(x.shape) > 2 else x))
    return [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]


@pytest.mark.parametrize("middle, output, message", [
    ([layers.Conv2D(4, 3, name="squeeze_in"), layers.GlobalAveragePooling2D(name="squeeze")], None,
     r"layer 'squeeze' \(GlobalAveragePooling2D\): no rule for this layer"),
    ([layers.Conv2D(4, 3, activation="tanh", name="tanh_conv")], None, r"'tanh_conv' \(Conv2D\): activation 'tanh'"),
    ([layers.Conv2D(4, 3, dilation_rate=2, name="wide")], None, r"'wide' \(Conv2D\): only dilation 1"),
    ([layers.Conv2D(4, 3), layers.BatchNormalization(axis=1, name="rows")], None, "'rows'.*only the channels axis"),
    ([layers.MaxPooling2D(3, strides=1, name="sliding")], None, "'sliding'.*only strides equal to the pool size"),
    ([layers.ReLU(max_value=6.0, name="relu6")], None, "'relu6'.*only the plain ReLU"),
    ([], layers.Dense(3, activation="relu", name="out"), "'out'.*output layer's activation 'relu'"),
])
def test_unsupported_layer_is_named_with_the_way_out(middle, output, message):
    with pytest.raises(UnsupportedModelError, match=message):
        check_model(model_layers(*middle, output=output))


def test_a_model_without_a_dense_output_is_unsupported():
    with pytest.raises(UnsupportedModelError, match="needs a Dense output layer"):
        check_model(model_layers(output=layers.Activation("softmax")))


def test_every_supported_configuration_passes():
    check_model(model_layers(
        layers.Conv2D(4, 3, padding="same", strides=2), layers.BatchNormalization(), layers.ReLU(),
        layers.AveragePooling2D(2, padding="same"), layers.Conv2D(4, 2, activation="relu"), layers.MaxPooling2D(2),
        layers.Activation("relu"), layers.Flatten(), layers.Dense(8, activation="relu"), layers.Dropout(0.5),
        output=layers.Dense(3)))
