"""The one place that picks an explanation engine: explain.engine, output and softmax_rule.

Every engine answers the same calls, as deepshap.Explainer does: predict(images), expected_value(background)
and shap_values(images, background, classes=None, progress=None), whose progress counts background
images done. The explain and mistakes stages explain with it; the trust stage measures the fast
engine's rules itself.
"""

from collections.abc import Callable

import keras
import numpy as np

from deepshap import OUTPUTS, SOFTMAX_RULES, Explainer, UnsupportedModelError, shap_reference
from deepshap.reference import logit_model
from fashion_shap.params import PARAMS_FILE, PipelineError

ENGINES = ("fast", "shap")


def check_engine_params(params: dict) -> None:
    """Fail with one line naming the param unless explain.engine, output and softmax_rule fit together."""
    for key, allowed in (("engine", ENGINES), ("output", OUTPUTS), ("softmax_rule", tuple(SOFTMAX_RULES))):
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
        self.model, self.output = model, output
        self.explained = logit_model(model) if output == "logit" else model

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.explained.predict(np.asarray(images), verbose=0)

    def expected_value(self, background: np.ndarray) -> np.ndarray:
        return self.predict(background).astype(np.float64).mean(axis=0)

    def shap_values(self, images: np.ndarray, background: np.ndarray, classes: np.ndarray | None = None,
                    progress: Callable[[float], None] | None = None) -> np.ndarray:
        """Return the values (images, *image shape, classes), or of each image's classes (images, k) if given."""
        per_image = None if progress is None else (lambda _: progress(len(background) / len(images)))
        values = shap_reference(self.model, background, images, self.output, progress=per_image)
        if classes is None:
            return values
        return np.take_along_axis(values, np.asarray(classes)[:, np.newaxis, np.newaxis, np.newaxis, :], axis=-1)


def make_explainer(model: keras.Model, engine: str, output: str, softmax_rule: str, chunk_size: int
                   ) -> Explainer | ShapEngine:
    """Return the engine the params name, or fail with one line if the fast engine cannot take the model."""
    if engine == "shap":
        return ShapEngine(model, output)
    try:
        return Explainer(model, output=output, softmax_rule=softmax_rule, chunk_size=chunk_size)
    except UnsupportedModelError as error:
        raise PipelineError(f"{error}; set explain.engine: shap in {PARAMS_FILE}") from None
