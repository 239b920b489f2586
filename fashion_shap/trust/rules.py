"""The three head rules the trust stage measures, and their values.

"shap", shap.DeepExplainer's softmax rule, as the lab; "shapley", the exact Shapley values of the
softmax over the logits; "logit", the logits explained, no softmax (README, "Which rule to trust").
"""

import numpy as np

from deepshap import Explainer, UnsupportedModelError
from fashion_shap.engines import accelerated_explainer
from fashion_shap.params import PARAMS_FILE, PipelineError

# Each rule as the engine's (output, softmax_rule); the logits have no softmax rule.
RULES = {"shap": ("probability", "shap"), "shapley": ("probability", "shapley"), "logit": ("logit", "shap")}


def rule_explainers(model, chunk_size: int, engine: str = "fast") -> dict[str, Explainer]:
    """Return each rule's engine, by name, or fail with one line if it cannot take the model."""
    return {name: rule_explainer(model, name, chunk_size, engine) for name in RULES}


def rule_explainer(model, name: str, chunk_size: int, engine: str = "fast") -> Explainer:
    """Return the engine of one rule: the accelerated one if engine (explain.engine) says so, else the fast one
    (trust measures these two; shap.DeepExplainer has neither the Shapley rule nor the head's multipliers)."""
    output, rule = RULES[name]
    try:
        if engine == "accelerated":
            return accelerated_explainer(model, output, rule)
        return Explainer(model, output, rule, chunk_size)
    except UnsupportedModelError as error:
        # explain.engine: shap, the way out the explain stage offers, is none here.
        raise PipelineError(f"the trust stage measures the fast engine, which cannot take this model ({error}); "
                            f"explain.engine does not apply to trust: change the model section of {PARAMS_FILE}"
                            ) from None


def explain_all(explainers: dict[str, Explainer], background: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
    """Return each rule's values of images against background, (images, 28, 28, 1, classes) each."""
    return explain_rules(explainers, images, background, None)


def rule_maps(explainers: dict[str, Explainer], background: np.ndarray, images: np.ndarray, classes: np.ndarray
              ) -> dict[str, np.ndarray]:
    """Return each rule's map of each image for its class in classes, (images, 28, 28, 1) each.

    A third of the time of all ten classes' values (measured), for the checks that read one class.
    """
    values = explain_rules(explainers, images, background, classes[:, np.newaxis])
    return {name: rule_values[..., 0] for name, rule_values in values.items()}


def explain_rules(explainers: dict[str, Explainer], images: np.ndarray, background: np.ndarray,
                  classes: np.ndarray | None) -> dict[str, np.ndarray]:
    """Return each rule's values, in one pass over the background where the explainers differ in their head
    rule alone (rule_explainers' do): the rules share the forward passes and every step below the head
    (measured: 50 s of CPU instead of 63 s for the lab's 10 images against 1,000 references)."""
    first = next(iter(explainers.values()))
    if all(isinstance(explainer, Explainer) and explainer.model is first.model
           and explainer.chunk_size == first.chunk_size for explainer in explainers.values()):
        heads = {name: explainer.head for name, explainer in explainers.items()}
        return first.shap_values_for_heads(heads, images, background, classes)
    return {name: explainer.shap_values(images, background, classes) for name, explainer in explainers.items()}


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
