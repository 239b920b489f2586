"""shap.DeepExplainer itself: the reference the engine is tested against, for any model shap supports."""

import warnings
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def logit_model(model: keras.Model) -> keras.Model:
    """Return a copy of model whose last layer has no activation: it outputs the logits."""
    config = model.get_config()
    config["layers"][-1]["config"]["activation"] = "linear"
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def float64_model(model: keras.Model) -> keras.Model:
    """Return a copy of model that computes in float64, with the same weights."""
    copy = keras.models.clone_model(
        model, input_tensors=keras.Input(shape=model.input_shape[1:], dtype="float64"),
        clone_function=lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": "float64"}))
    copy.set_weights([weight.astype(np.float64) for weight in model.get_weights()])
    return copy


def shap_reference(model: keras.Model, background: np.ndarray, images: np.ndarray, output: str = "probability",
                   progress: Callable[[int], None] | None = None, dtype: str = "float32") -> np.ndarray:
    """Return shap.DeepExplainer's values, (images, *image shape, classes), one image at a time.

    output "logit" explains the same model with a linear last layer. dtype "float64" explains a float64 copy of
    it: shap's rules in float64, against which float32 values (shap's own, the engine's) show their rounding.
    """
    import shap  # here, not above: a process on the fast engine alone then never loads it (0.2 s of its start)

    if output == "logit":
        model = logit_model(model)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    if dtype == "float64":
        model, background, images = float64_model(model), np.float64(background), np.float64(images)
    # shap feeds the functional model a list, and traces a graph per class: Keras and TensorFlow
    # warn about both on every call, and cope.
    tf.get_logger().setLevel("ERROR")
    values = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        explainer = shap.DeepExplainer(model, np.asarray(background))
        for image in images:
            values.append(explainer.shap_values(image[np.newaxis], check_additivity=False))
            if progress is not None:
                progress(1)
    return np.concatenate(values)
