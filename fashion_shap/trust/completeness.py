"""Completeness: how far each image's values miss f(x) - E f(background), per class."""

import numpy as np

from deepshap import Explainer
from fashion_shap.readings import additivity_errors


def completeness(explainers: dict[str, Explainer], values: dict[str, np.ndarray], images: np.ndarray,
                 background: np.ndarray) -> dict:
    """Return, per rule, the largest and mean additivity error over images and classes."""
    metrics, outputs = {}, {}
    for name, explainer in explainers.items():
        if explainer.output not in outputs:  # the rules of one output share f(x) and E f(background)
            outputs[explainer.output] = explainer.predict(images), explainer.expected_value(background)
        errors = additivity_errors(values[name], *outputs[explainer.output])
        metrics[name] = {"max_additivity_error": float(errors.max()), "mean_additivity_error": float(errors.mean())}
    return metrics
