"""The layers of a supported Keras model, and its forward pass keeping what the backward rules need."""

import keras
import numpy as np
import tensorflow as tf
from keras import layers


class UnsupportedModelError(ValueError):
    """The model has a layer or activation the engine has no rule for; shap.DeepExplainer may handle it."""


class DenseReluCnn:
    """The weights of a supported model, and its forward pass with every intermediate value.

    The supported family: Input -> Conv2D(relu, valid, stride 1) -> MaxPooling2D -> Flatten ->
    Dense(relu) -> Dense(softmax or linear).
    """

    def __init__(self, model: keras.Model):
        conv, pool, dense, output = supported_layers(model)
        # (filters, kernel rows, kernel columns, channels): one filter's taps together
        self.conv_kernel_t = np.ascontiguousarray(np.moveaxis(conv.kernel.numpy(), -1, 0))
        self.pool_size = tuple(pool.pool_size)
        self.dense_kernel_t = np.ascontiguousarray(dense.kernel.numpy().T, dtype=np.float64)  # (units, pooled)
        self.output_kernel_t = np.ascontiguousarray(output.kernel.numpy().T, dtype=np.float64)  # (logits, units)
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
        """Return the intermediate values of images (float32, TensorFlow's, as shap sees them).

        Each image's values do not depend on the batch it is in (checked for batches of 2 to 128),
        except that TensorFlow rounds a batch of one differently: it runs as two.
        """
        batch = np.concatenate([images, images]) if len(images) == 1 else images
        names = ("conv_in", "dense_in", "logits")
        return {name: value.numpy()[: len(images)] for name, value in zip(names, self._forward(tf.constant(batch)))}


def unsupported(layer, description: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"the fast engine does not support layer '{layer.name}' ({layer.__class__.__name__}) where it expects "
        f"{description}"
    )


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
        (layers.Dense, lambda layer: layer.activation in (keras.activations.softmax, keras.activations.linear)
         and layer.use_bias, "a Dense with softmax or no activation, and a bias"),
    ]
    model_layers = list(model.layers)
    for position, (kind, fits, description) in enumerate(expected):
        if position >= len(model_layers):
            raise UnsupportedModelError(f"the fast engine needs {description} after the last layer")
        layer = model_layers[position]
        if not (isinstance(layer, kind) and fits(layer)):
            raise unsupported(layer, description)
    if len(model_layers) > len(expected):
        raise unsupported(model_layers[len(expected)], "nothing after the output layer")
    return tuple(model_layers[1:3] + model_layers[4:6])
