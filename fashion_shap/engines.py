"""The one place that picks an explanation engine: explain.engine, output and softmax_rule.

- fast: deepshap.Explainer, exact and compiled for the CPU; its bytes are the same on any CPU.
- accelerated: deepshap.accelerated (JAX) on a GPU or TPU where JAX finds one, else on the CPU (slower
  than fast there); the same values to about 1e-6 of the largest (README), its bytes the device's.
- shap: shap.DeepExplainer itself, the reference, for any model.
Every engine answers the same calls, as deepshap.Explainer does: predict(images), expected_value(background)
and shap_values(images, background, classes=None, progress=None), whose progress counts background
images done.

Each engine's libraries load when it is made, not with this module: the mistakes stage checks its params
here in a process that never loads TensorFlow (its Ray workers explain), 3 s sooner at its start.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from deepshap.errors import UnsupportedModelError
from deepshap.options import OUTPUTS, SOFTMAX_RULE_NAMES
from fashion_shap.params import PARAMS_FILE, PipelineError

if TYPE_CHECKING:
    import keras

ENGINES = ("fast", "accelerated", "shap")
ACCELERATED_INSTALL = "pip install -e '.[gpu]' (JAX with CUDA) or -e '.[test]' (JAX for the CPU)"


def check_engine_params(params: dict) -> None:
    """Fail with one line naming the param unless explain.engine, output and softmax_rule fit together."""
    for key, allowed in (("engine", ENGINES), ("output", OUTPUTS), ("softmax_rule", SOFTMAX_RULE_NAMES)):
        if params[key] not in allowed:
            raise PipelineError(f"{PARAMS_FILE}: explain.{key} must be one of {', '.join(allowed)}, got {params[key]!r}")
    if params["engine"] == "shap" and params["output"] == "probability" and params["softmax_rule"] != "shap":
        raise PipelineError(
            f"{PARAMS_FILE}: explain.engine: shap has only shap's softmax rule; set explain.softmax_rule: shap "
            "or explain.engine: fast"
        )


class ShapEngine:
    """shap.DeepExplainer behind the engines' calls: every class explained, one image at a time."""

    def __init__(self, model: keras.Model, output: str):
        from deepshap.reference import logit_model

        self.model, self.output = model, output
        self.explained = logit_model(model) if output == "logit" else model

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.explained.predict(np.asarray(images), verbose=0)

    def expected_value(self, background: np.ndarray) -> np.ndarray:
        return self.predict(background).astype(np.float64).mean(axis=0)

    def shap_values(self, images: np.ndarray, background: np.ndarray, classes: np.ndarray | None = None,
                    progress: Callable[[float], None] | None = None) -> np.ndarray:
        """Return the values (images, *image shape, classes), or of each image's classes (images, k) if given."""
        from deepshap.reference import shap_reference

        per_image = None if progress is None else (lambda _: progress(len(background) / len(images)))
        values = shap_reference(self.model, background, images, self.output, progress=per_image)
        return values if classes is None else chosen_classes(values, classes)


def chosen_classes(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Return each image's classes' values: (images, *image shape, classes) -> (images, *image shape, k), with
    classes (images, k)."""
    chosen = np.expand_dims(np.asarray(classes), tuple(range(1, values.ndim - 1)))
    return np.take_along_axis(values, chosen, axis=-1)


def accelerated_explainer(model: keras.Model, output: str, softmax_rule: str):
    """Return the accelerated engine, its chunks sized to the device's memory; say so when it runs on the CPU."""
    try:
        import jax

        from deepshap.accelerated import AcceleratedExplainer, layers_from_keras
    except ImportError as error:
        raise PipelineError(f"explain.engine: accelerated needs JAX ({error}); {ACCELERATED_INSTALL}") from None
    say_where(jax.default_backend())
    return AcceleratedExplainer(layers_from_keras(model), output=output, softmax_rule=softmax_rule)


@functools.cache
def say_where(backend: str) -> None:
    """Say once per process where the accelerated engine runs, when that is the CPU."""
    if backend == "cpu":
        print("engines: JAX finds no GPU or TPU here: the accelerated engine runs on the CPU, where explain.engine: "
              "fast is faster")


def make_explainer(model: keras.Model, engine: str, output: str, softmax_rule: str, chunk_size: int):
    """Return the engine the params name (chunk_size: the fast engine's references per step), or fail with
    one line if it cannot take the model."""
    if engine == "shap":
        return ShapEngine(model, output)
    try:
        if engine == "accelerated":
            return accelerated_explainer(model, output, softmax_rule)
        from deepshap.explainer import Explainer

        return Explainer(model, output=output, softmax_rule=softmax_rule, chunk_size=chunk_size)
    except UnsupportedModelError as error:
        raise PipelineError(f"{error}; set explain.engine: shap in {PARAMS_FILE}") from None
