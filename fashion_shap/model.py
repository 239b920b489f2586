"""The CNN that params.yaml's model section describes, its weights file, and seeding that makes training repeatable.

The defaults are the lab's model: Conv2D(32, 3x3, relu) -> MaxPooling2D(2) -> Flatten -> Dense(256, relu)
-> Dense(10, softmax). The weights file carries the architecture it was trained with (an HDF5
attribute), so the stages that load it need no model params of their own.
"""

import json
import tempfile
from pathlib import Path

import h5py
import keras
import tensorflow as tf
from keras import layers

from fashion_shap.data import NUM_CLASSES
from fashion_shap.params import PARAMS_FILE, PipelineError, check_type, read_params, require_positive

IMAGE_SHAPE = (28, 28, 1)
PADDINGS = ("valid", "same")
ARCHITECTURE_ATTRIBUTE = "fashion_mnist_shap.model"  # in the weights file: the model params as JSON
MODEL_PARAM_TYPES = {
    "conv_filters": list, "kernel_size": int, "pool_size": int, "padding": str, "dense_units": list,
    "dropout": float, "batch_norm": bool,
}


def build_model(conv_filters: list[int], kernel_size: int, pool_size: int, padding: str, dense_units: list[int],
                dropout: float, batch_norm: bool) -> keras.Model:
    """Return the CNN, uncompiled: a conv block per entry of conv_filters, a Dense(relu) per entry of dense_units.

    A conv block is Conv2D(relu) then MaxPooling2D; with batch_norm, Conv2D -> BatchNormalization ->
    ReLU -> MaxPooling2D. dropout > 0 adds a Dropout after each hidden Dense.
    """
    inputs = keras.Input(shape=IMAGE_SHAPE)
    x = inputs
    for filters in conv_filters:
        if batch_norm:
            x = layers.Conv2D(filters, kernel_size, padding=padding)(x)
            x = layers.ReLU()(layers.BatchNormalization()(x))
        else:
            x = layers.Conv2D(filters, kernel_size, padding=padding, activation="relu")(x)
        x = layers.MaxPooling2D(pool_size)(x)
    x = layers.Flatten()(x)
    for units in dense_units:
        x = layers.Dense(units, activation="relu")(x)
        if dropout > 0:
            x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


def check_architecture(params: dict) -> dict:
    """Return the model params if they describe a buildable CNN; else fail naming the param to fix."""
    for key in ("conv_filters", "dense_units"):
        for value in params[key]:
            require_positive(f"model.{key}", check_type(f"model.{key}", value, int))
    if not params["conv_filters"]:
        raise PipelineError(f"{PARAMS_FILE}: model.conv_filters must hold at least one conv block, e.g. [32]")
    for key in ("kernel_size", "pool_size"):
        require_positive(f"model.{key}", params[key])
    if params["padding"] not in PADDINGS:
        raise PipelineError(f"{PARAMS_FILE}: model.padding must be one of {', '.join(PADDINGS)}, got {params['padding']!r}")
    if not 0.0 <= params["dropout"] < 1.0:
        raise PipelineError(f"{PARAMS_FILE}: model.dropout must be in [0, 1), got {params['dropout']}")
    side = IMAGE_SHAPE[0]
    for _ in params["conv_filters"]:
        side = (side - params["kernel_size"] + 1 if params["padding"] == "valid" else side) // params["pool_size"]
        if side < 1:
            raise PipelineError(
                f"{PARAMS_FILE}: model.conv_filters has {len(params['conv_filters'])} conv blocks, more than a "
                f"28x28 image holds with kernel_size {params['kernel_size']}, pool_size {params['pool_size']} and "
                f"{params['padding']} padding; remove a block or use padding: same"
            )
    return params


def read_architecture() -> dict:
    """Return params.yaml's model section, checked."""
    return check_architecture(read_params("model", MODEL_PARAM_TYPES))


def save_weights(model: keras.Model, path: Path, architecture: dict) -> None:
    """Save the weights (.weights.h5: its bytes depend on the weights alone) with the architecture beside them."""
    model.save_weights(path)
    with h5py.File(path, "a") as file:
        file.attrs[ARCHITECTURE_ATTRIBUTE] = json.dumps(architecture, sort_keys=True)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def load_model(path: str | Path, data: bytes | None = None) -> keras.Model:
    """Return the CNN saved by the train stage: built from the architecture in the file, with its weights.

    data: the file's bytes, read where the file is (a Ray worker on another machine gets them so); path then
    only names the file in an error.
    """
    if data is None:
        return read_model(path, path)
    with tempfile.TemporaryDirectory(prefix="model-") as folder:
        copy = Path(folder) / "model.weights.h5"  # Keras reads weights from a file's path alone
        copy.write_bytes(data)
        return read_model(copy, path)


def read_model(file_path: Path, path: str | Path) -> keras.Model:
    """Return the CNN in the weights file at file_path, or fail in one line naming path."""
    try:
        with h5py.File(file_path, "r") as file:
            stored = file.attrs.get(ARCHITECTURE_ATTRIBUTE)
        if stored is None:
            raise ValueError("it holds no architecture")
        model = build_model(**json.loads(stored))
        model.load_weights(file_path)
    except (OSError, ValueError) as error:
        raise PipelineError(f"cannot load model weights from {path} ({error}); run the train stage again") from None
    return model
