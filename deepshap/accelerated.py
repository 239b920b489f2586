"""AcceleratedExplainer: deepshap.Explainer's values in JAX, for a GPU or TPU; no TensorFlow needed.

    from deepshap.accelerated import AcceleratedExplainer, layers_from_weights_file
    explainer = AcceleratedExplainer(layers_from_weights_file("models/model.weights.h5"))
    values = explainer.shap_values(images, background)  # (images, *image shape, classes) float32

The same API and rules as deepshap.Explainer (shap.DeepExplainer's, or the exact Shapley softmax
rule), computed in float32 for every (image, reference) pair of a chunk at once, the references
summed on the device. Its values agree with the CPU engine's to about 1e-6 of the largest where the
forward passes agree: with the Shapley rule or the logits, or shap's rule where no logit nearly ties
between an image and a reference. shap's rule divides by each logit's change, so there the last bit
of the forward pass, which TensorFlow and XLA round differently, moves the values (measured on the
lab's model: 7e-3 of the largest; both engines stand 1e-2 from float64 arithmetic). Their bytes may
also differ from one device or JAX version to another: the pipeline's default, byte-reproducible
engine stays deepshap.Explainer.
"""

import json
import math
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from deepshap.accelerated_rules import HEADS, Layer, chunk_values, forward, forward_logits
from deepshap.errors import UnsupportedModelError
from deepshap.options import OUTPUTS, SOFTMAX_RULE_NAMES

ARCHITECTURE_ATTRIBUTE = "fashion_mnist_shap.model"  # the model params as JSON, as the pipeline's model module writes
KERAS_BATCH_NORM_EPSILON = 1e-3  # BatchNormalization's default, which the pipeline's model builder keeps
# Memory the chunks may take: on a CPU, a fixed budget; on a GPU or TPU, a share of what is free
# (the rest for XLA's own temporaries and fragmentation).
CPU_BUDGET_BYTES = 512 * 2**20
DEVICE_SHARE = 0.5
# Arrays of (pairs, classes, widest layer) float32 a step holds at once: XLA's memory analysis of a step
# of the lab's model on a CPU gave 1.5 (127 MB for 10 images x 10 references).
LIVE_ARRAYS = 2
MAX_ARRAY_ELEMENTS = 2**31 - 1  # per array: cuDNN's and some of XLA's kernels index with 32 bits
PREDICT_BATCH = 1024  # images per forward pass of predict, at most


def use_compilation_cache() -> None:
    """Keep the compiled passes on disk between processes, as deepshap.cache keeps numba's loops: each pipeline
    stage is a process of its own, and each compiled every pass again (measured: the trust stage on the tests'
    tiny data, on a CPU, 14.2 s -> 7.6 s once its passes are kept). In JAX's persistent cache under
    $XDG_CACHE_HOME (else ~/.cache) /jax/deepshap; a cache the user chose (JAX_COMPILATION_CACHE_DIR) is left as set.
    """
    if jax.config.jax_compilation_cache_dir is None:
        home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        jax.config.update("jax_compilation_cache_dir", os.path.join(home, "jax", "deepshap"))
        # Every pass, not only those that take over JAX's default of a second to compile: on a CPU most take less.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


use_compilation_cache()

# The compiled passes, by the model's structure and head rule: explainers of models that differ in their weights
# alone (the trust stage's randomized models) share them, and jax compiles each input shape once for all (measured,
# JAX_LOG_COMPILES=1: the trust stage on the tests' tiny data compiled 39 programs, 36 so).
COMPILED: dict[tuple, tuple[Callable, Callable]] = {}


def compiled(layers: list[Layer], head: Callable) -> tuple[Callable, Callable]:
    """Return jitted (forward_logits, chunk_values) for layers and head, taking the weights as arguments: the
    traced code reads each layer's kind and options, never its weights."""
    key = (tuple((layer.kind, repr(sorted(layer.options.items()))) for layer in layers), head)
    if key not in COMPILED:
        COMPILED[key] = (jax.jit(partial(forward_logits, layers)), jax.jit(partial(chunk_values, layers, head)))
    return COMPILED[key]


class AcceleratedExplainer:
    """DeepSHAP values of a model given as layers (layers_from_keras, layers_from_weights_file).

    output: "probability" explains the softmax's outputs with the head rule softmax_rule ("shap" or
    "shapley"); "logit" explains the logits. chunk_size: references per step; None sizes the chunks
    (and groups of images) to the device's free memory.
    """

    def __init__(self, layers: list[Layer], output: str = "probability", softmax_rule: str = "shap",
                 chunk_size: int | None = None):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if softmax_rule not in SOFTMAX_RULE_NAMES:
            raise ValueError(f"softmax_rule must be one of {', '.join(SOFTMAX_RULE_NAMES)}, got {softmax_rule!r}")
        if any(layer.kind == "softmax" for layer in layers[:-1]):
            raise UnsupportedModelError("the accelerated engine takes a softmax only as the model's last layer")
        has_softmax = bool(layers) and layers[-1].kind == "softmax"
        if output == "probability" and not has_softmax:
            raise UnsupportedModelError("output 'probability' needs a softmax output layer; the model has none")
        self.layers = layers[:-1] if has_softmax else list(layers)
        if not self.layers or self.layers[-1].kind != "dense":
            raise UnsupportedModelError("the accelerated engine needs a Dense output layer, the logits")
        self.num_classes = self.layers[-1].weights[0].shape[1]
        self.weights = [tuple(jnp.asarray(weight, dtype=jnp.float32) for weight in layer.weights)
                        for layer in self.layers]
        self.output, self.chunk_size = output, chunk_size
        head = HEADS["logit" if output == "logit" else softmax_rule]
        # Compiled on first use, once per input shape.
        self.logits, self.chunk = compiled(self.layers, head)
        self.head = jax.jit(head)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the explained outputs of images, (images, classes) float32: probabilities or logits."""
        # Batches padded to a power of two: a few shapes to compile, whatever the counts asked for.
        size = min(PREDICT_BATCH, 1 << max(len(images) - 1, 0).bit_length())
        outputs = []
        for start in range(0, len(images), size):
            batch = np.asarray(images[start : start + size], dtype=np.float32)
            logits = self.logits(self.weights, padded(batch, size))[: len(batch)]
            outputs.append(np.asarray(logits if self.output == "logit" else jax.nn.softmax(logits)))
        return np.concatenate(outputs)

    def expected_value(self, background: np.ndarray) -> np.ndarray:
        """Return the mean explained output over the background, E[f(background)], (classes,) float64."""
        return self.predict(background).astype(np.float64).mean(axis=0)

    def head_multipliers(self, images: np.ndarray, references: np.ndarray, classes: np.ndarray | None = None
                         ) -> np.ndarray:
        """Return the head rule's multipliers w.r.t. the logits, (images, references, classes, logits) float64."""
        image_logits = self.logits(self.weights, jnp.asarray(images, dtype=jnp.float32))
        reference_logits = self.logits(self.weights, jnp.asarray(references, dtype=jnp.float32))
        multipliers = np.asarray(self.head(image_logits, reference_logits), dtype=np.float64)
        if classes is None:
            return multipliers
        classes = np.asarray(classes)
        return multipliers[np.arange(len(classes))[:, np.newaxis], :, classes].transpose(0, 2, 1, 3)

    def shap_values(self, images: np.ndarray, background: np.ndarray, classes: np.ndarray | None = None,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Return the values in shap's layout, (images, rows, columns, channels, classes) float32.

        classes: None for every class, or an int array (images, k) naming the k classes to explain
        for each image; the values' last axis then follows it.
        progress: called with the number of background images done after each chunk.
        """
        if len(background) == 0:
            raise ValueError("the background is empty: the values are means over its images")
        images = np.asarray(images, dtype=np.float32)
        classes = None if classes is None else np.asarray(classes, dtype=np.int32)
        count = self.num_classes if classes is None else classes.shape[1]
        group, chunk = self.plan(images.shape[1:], len(images), len(background), count)
        totals = np.zeros(images.shape + (count,))  # float64 across chunks
        for start in range(0, len(background), chunk):
            references = np.asarray(background[start : start + chunk], dtype=np.float32)
            mask = padded(np.ones(len(references), dtype=np.float32), chunk, zeros=True)
            pending = []  # the groups' results, fetched once all are queued: the device runs them back to back
            for first in range(0, len(images), group):
                done = slice(first, min(first + group, len(images)))
                chosen = None if classes is None else padded(classes[done], group)
                pending.append((done, self.chunk(self.weights, padded(images[done], group), padded(references, chunk),
                                                 mask, chosen)))
            for done, values in pending:
                totals[done] += np.asarray(values)[: done.stop - done.start]
            if progress is not None:
                progress(len(references))
        return (totals / len(background)).astype(np.float32)

    def reference_values(self, images: np.ndarray, references: np.ndarray) -> Iterator[np.ndarray]:
        """Yield, reference by reference, the values of images against it alone (a background of one), as
        deepshap.Explainer.reference_values does."""
        for index in range(len(references)):
            yield self.shap_values(images, references[index : index + 1])

    def plan(self, image_shape: tuple, images: int, references: int, classes: int) -> tuple[int, int]:
        """Return (images per step, references per step): chunk_size references, or as many as fit the memory."""
        example = jax.ShapeDtypeStruct((1,) + image_shape, jnp.float32)
        _, inputs = jax.eval_shape(partial(forward, self.layers), self.weights, example)
        largest = max(math.prod(values.shape[1:]) for values in inputs)  # floats per image, the widest layer's
        pairs = max(1, min(memory_budget() // (4 * LIVE_ARRAYS * classes * largest),  # float32: 4 bytes
                           MAX_ARRAY_ELEMENTS // (classes * largest)))
        chunk = min(references, self.chunk_size or max(1, pairs // images))
        return min(images, max(1, pairs // chunk)), chunk


def padded(array: np.ndarray, size: int, zeros: bool = False) -> np.ndarray:
    """Return array with its first axis padded to size, so that every step has one shape, compiled once:
    with copies of its last row (finite through every rule), or zeros."""
    pads = [(0, size - len(array))] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, pads, mode="constant" if zeros else "edge")


def memory_budget() -> int:
    """Return the bytes a step may take: a share of the default device's free memory, or CPU_BUDGET_BYTES
    where the device reports none (a CPU)."""
    stats = jax.devices()[0].memory_stats()
    if not stats or "bytes_limit" not in stats:
        return CPU_BUDGET_BYTES
    return int(DEVICE_SHARE * (stats["bytes_limit"] - stats["bytes_in_use"]))


def unsupported(name: str, class_name: str, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"the accelerated engine does not support layer '{name}' ({class_name}): {why}; "
                                 "deepshap.Explainer or shap.DeepExplainer may handle it")


ACTIVATIONS = {"relu": [Layer("relu")], "linear": [], "softmax": [Layer("softmax")]}


def activation_layers(config: dict) -> list[Layer]:
    """Return the layers of a layer's activation: relu, none, or the head's softmax."""
    if not isinstance(config["activation"], str) or config["activation"] not in ACTIVATIONS:
        raise UnsupportedModelError(f"activation {config['activation']!r} has no rule here")
    return ACTIVATIONS[config["activation"]]


def dense_layers(config: dict, weights: list) -> list[Layer]:
    return [Layer("dense", tuple(weights))] + activation_layers(config)


def conv_layers(config: dict, weights: list) -> list[Layer]:
    if config["data_format"] != "channels_last" or config["groups"] != 1:
        raise UnsupportedModelError("only channels last and one group")
    options = {"strides": tuple(config["strides"]), "padding": config["padding"].upper(),
               "dilation": tuple(config["dilation_rate"])}
    return [Layer("conv", tuple(weights), options)] + activation_layers(config)


def batch_norm_layers(config: dict, weights: list) -> list[Layer]:
    if config["axis"] not in (-1, [-1]):
        raise UnsupportedModelError("only the channels axis, the last")
    weights = list(weights)
    gamma = weights.pop(0) if config["scale"] else 1.0
    beta = weights.pop(0) if config["center"] else 0.0
    return [batch_norm_layer(gamma, beta, *weights, config["epsilon"])]


def batch_norm_layer(gamma: np.ndarray | float, beta: np.ndarray | float, moving_mean: np.ndarray,
                     moving_variance: np.ndarray, epsilon: float) -> Layer:
    """BatchNormalization at inference, (x - mean) / sqrt(variance + epsilon) * gamma + beta, as x * scale + shift."""
    scale = gamma / np.sqrt(np.asarray(moving_variance, dtype=np.float64) + epsilon)
    return Layer("batch_norm", (scale.astype(np.float32), (beta - moving_mean * scale).astype(np.float32)))


def relu_layers(config: dict, weights: list) -> list[Layer]:
    if config["max_value"] is not None or config["negative_slope"] or config["threshold"]:
        raise UnsupportedModelError("only the plain ReLU: no max value, slope or threshold")
    return [Layer("relu")]


def max_pool_layers(config: dict, weights: list) -> list[Layer]:
    pool_size = tuple(config["pool_size"])
    if tuple(config["strides"] or pool_size) != pool_size or config["data_format"] != "channels_last":
        raise UnsupportedModelError("only strides equal to the pool size, channels last")
    return [Layer("max_pool", options={"pool_size": pool_size, "padding": config["padding"].upper()})]


def flatten_layers(config: dict, weights: list) -> list[Layer]:
    if config.get("data_format", "channels_last") != "channels_last":
        raise UnsupportedModelError("only channels last")
    return [Layer("flatten")]


# Keras layer class name -> its layers here, from its get_config() and get_weights().
KERAS_LAYERS = {
    "Conv2D": conv_layers, "Dense": dense_layers,
    "BatchNormalization": batch_norm_layers, "ReLU": relu_layers, "MaxPooling2D": max_pool_layers,
    "Activation": lambda config, weights: activation_layers(config), "Flatten": flatten_layers,
    "Dropout": lambda config, weights: [], "InputLayer": lambda config, weights: [],  # the identity at inference
}


def layers_from_keras(model: Any) -> list[Layer]:
    """Return the layers of a Keras model whose layers form a chain, read through model.layers alone
    (each one's class name, get_config() and get_weights()), so that this module needs no Keras."""
    layers = []
    for layer in model.layers:
        class_name = type(layer).__name__
        if class_name not in KERAS_LAYERS:
            raise unsupported(layer.name, class_name, "no rule for this layer")
        try:
            layers.extend(KERAS_LAYERS[class_name](layer.get_config(), layer.get_weights()))
        except UnsupportedModelError as error:
            raise unsupported(layer.name, class_name, str(error)) from None
    return layers


def layers_from_weights_file(path: str | Path) -> list[Layer]:
    """Return the layers of the pipeline's model from the .weights.h5 file its train stage writes, without Keras.

    The file holds the model params as JSON in the HDF5 attribute ARCHITECTURE_ATTRIBUTE; the layers
    are those the pipeline's model builder makes of them (fashion_shap.model.build_model).
    """
    with h5py.File(path, "r") as file:
        stored = file.attrs.get(ARCHITECTURE_ATTRIBUTE)
        if stored is None:
            raise ValueError(f"{path} holds no architecture (HDF5 attribute {ARCHITECTURE_ATTRIBUTE!r}); it is not "
                             f"a weights file of the pipeline's train stage")
        try:
            return architecture_layers(json.loads(stored), file)
        except KeyError as error:
            raise ValueError(f"{path} lacks weights its architecture needs ({error})") from None


def stored_weights(file: h5py.File, kind: str, index: int) -> tuple:
    """Return the weights of the index-th Keras layer of a kind (in the model's order), float32: Keras keeps
    them in layers/<kind>[_<index>]/vars/<j>."""
    variables = file["layers"][kind if index == 0 else f"{kind}_{index}"]["vars"]
    return tuple(np.asarray(variables[str(j)], dtype=np.float32) for j in range(len(variables)))


def architecture_layers(architecture: dict, file: h5py.File) -> list[Layer]:
    """Return build_model's layers for the architecture: per conv filter Conv2D -> [BatchNormalization] ->
    ReLU -> MaxPooling2D (valid), Flatten, per dense unit Dense -> ReLU (a Dropout after it is the
    identity at inference), then Dense -> softmax."""
    conv = {"strides": (1, 1), "padding": architecture["padding"].upper(), "dilation": (1, 1)}
    pool = {"pool_size": (architecture["pool_size"],) * 2, "padding": "VALID"}
    layers = []
    for block in range(len(architecture["conv_filters"])):
        layers.append(Layer("conv", stored_weights(file, "conv2d", block), conv))
        if architecture["batch_norm"]:
            gamma, beta, moving_mean, moving_variance = stored_weights(file, "batch_normalization", block)
            layers.append(batch_norm_layer(gamma, beta, moving_mean, moving_variance, KERAS_BATCH_NORM_EPSILON))
        layers += [Layer("relu"), Layer("max_pool", options=pool)]
    layers.append(Layer("flatten"))
    for index in range(len(architecture["dense_units"])):
        layers += [Layer("dense", stored_weights(file, "dense", index)), Layer("relu")]
    return layers + [Layer("dense", stored_weights(file, "dense", len(architecture["dense_units"]))), Layer("softmax")]
