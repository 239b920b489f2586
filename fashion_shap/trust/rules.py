"""The three head rules the trust stage measures, and their values.

"shap", shap.DeepExplainer's softmax rule, as the lab; "shapley", the exact Shapley values of the
softmax over the logits; "logit", the logits explained, no softmax (README, "Which rule to trust").
"""

import numpy as np

from deepshap import Explainer

# Each rule as the engine's (output, softmax_rule); the logits have no softmax rule.
RULES = {"shap": ("probability", "shap"), "shapley": ("probability", "shapley"), "logit": ("logit", "shap")}


def rule_explainers(model, chunk_size: int) -> dict[str, Explainer]:
    """Return the fast engine for each rule, by name."""
    return {name: Explainer(model, output, rule, chunk_size) for name, (output, rule) in RULES.items()}


def explain_all(explainers: dict[str, Explainer], background: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
    """Return each rule's values of images against background, (images, 28, 28, 1, classes) each."""
    return {name: explainer.shap_values(images, background) for name, explainer in explainers.items()}


def rule_maps(explainers: dict[str, Explainer], background: np.ndarray, images: np.ndarray, classes: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Return each rule's map of each image for its class in classes, (images, 28, 28, 1) each.

    A third of the time of all ten classes' values (measured), for the checks that read one class.
    """
    return {name: explainer.shap_values(images, background, classes[:, np.newaxis])[..., 0]
            for name, explainer in explainers.items()}


def predicted_maps(explainers: dict[str, Explainer], background: np.ndarray, images: np.ndarray, classes: np.ndarray,
                   rows: np.ndarray, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return each rule's map of each image for its class in classes, (images, 28, 28, 1) each, taking
    the images at rows from known (each rule's values of images[rows] for all classes, against background)."""
    maps = {name: np.empty(images.shape, dtype=values.dtype) for name, values in known.items()}
    for name, values in known.items():
        maps[name][rows] = values[np.arange(len(rows)), ..., classes[rows]]
    others = np.setdiff1d(np.arange(len(images)), rows)
    if len(others):  # none when the lab's images are all the images
        for name, computed in rule_maps(explainers, background, images[others], classes[others]).items():
            maps[name][others] = computed
    return maps
