"""Model randomization (Adebayo et al. 2018), for the lab's rule: with the weights re-initialised layer
by layer from the top, faithful explanations should stop resembling the trained model's."""

import keras
import numpy as np
from scipy.stats import spearmanr

from fashion_shap.trust.rules import rule_explainer


def lab_rule_maps(model, background: np.ndarray, images: np.ndarray, chunk_size: int, classes: np.ndarray,
                  engine: str = "fast") -> np.ndarray:
    """Return the lab's rule's map of each image for its class in classes, (images, 28, 28, 1)."""
    explainer = rule_explainer(model, "shap", chunk_size, engine)
    return explainer.shap_values(images, background, classes[:, np.newaxis])[..., 0]


def seeded(initializer, seed: int):
    """Return a copy of a Keras initializer that draws from seed (a model's own drew theirs when it was built)."""
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = seed
    return initializer.__class__.from_config(config)


def reinitialize(layer, seed: int) -> None:
    """Draw each of a layer's weights anew from its own initializer, as in a model just built: a Dense's or
    Conv2D's kernel and bias, a BatchNormalization's scale, offset and moving statistics (all of a layer's
    weights, as Adebayo et al. re-initialise them; those of a BatchNormalization then leave it near the identity)."""
    for variable in layer.weights:
        initializer = getattr(layer, f"{variable.name}_initializer")  # Keras names it after the variable
        variable.assign(seeded(initializer, seed)(variable.shape))


def randomized_values(model, images: np.ndarray, background: np.ndarray, seed: int, chunk_size: int,
                      classes: np.ndarray, engine: str = "fast") -> list[np.ndarray]:
    """Return the maps of classes after re-initialising the top 1, 2, ... layers with weights (Adebayo's cascade)."""
    randomized = keras.models.clone_model(model)
    randomized.set_weights(model.get_weights())
    values = []
    for layer in reversed([layer for layer in randomized.layers if layer.weights]):
        reinitialize(layer, seed + len(values))
        print(f"trust: randomization, {layer.name} and the layers above it re-initialised")
        values.append(lab_rule_maps(randomized, background, images, chunk_size, classes, engine))
    return values


def rank_correlation(maps: np.ndarray, other: np.ndarray) -> float:
    """Return the mean over images of the Spearman correlation of their two maps, (images, *image shape) each."""
    return float(np.mean([spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(maps, other)]))


def randomization_check(model, images: np.ndarray, background: np.ndarray, maps: np.ndarray, params: dict,
                        classes: np.ndarray) -> tuple[dict, np.ndarray, list[np.ndarray]]:
    """Return the cascade's metrics, the lab's rule's maps of classes against the first
    randomization_background images of the background (maps if that is all of it), and those maps
    after each cascade step."""
    subset = background[: params["randomization_background"]]
    chunk_size, engine = params["chunk_size"], params["engine"]
    trained = (lab_rule_maps(model, subset, images, chunk_size, classes, engine) if len(subset) < len(background)
               else maps)
    randomized = randomized_values(model, images, subset, params["seed"], chunk_size, classes, engine)
    correlations = {f"top{k}_layers": rank_correlation(trained, v) for k, v in enumerate(randomized, 1)}
    passed = bool(max(correlations.values()) < params["randomization_threshold"])
    return {"rank_correlation": correlations, "passed": passed}, trained, randomized
