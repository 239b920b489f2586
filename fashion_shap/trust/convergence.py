"""Convergence: how far apart the maps are with two disjoint backgrounds of each size, and the slope
of log distance against log size (-0.5 when the maps settle like a mean of independent draws)."""

import numpy as np

from deepshap import Explainer
from fashion_shap.trust.rules import RULES, explain_all


def images_outside(x_train: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Return the training images that are not in the background (the sample's indices are not kept)."""
    taken = {image.tobytes() for image in background}
    return x_train[np.array([image.tobytes() not in taken for image in x_train])]


def disjoint_backgrounds(pool: np.ndarray, size: int, count: int, rng) -> list[np.ndarray]:
    """Return count disjoint backgrounds of size images drawn from pool, each in pool order."""
    picks = rng.choice(len(pool), size=count * size, replace=False)
    return [pool[np.sort(part)] for part in picks.reshape(count, size)]


def relative_distance(values: np.ndarray, other: np.ndarray) -> float:
    """Return ||values - other|| / ||values||: 0 for equal attributions, 1 for a change as large as they are."""
    return float(np.linalg.norm(values - other) / np.linalg.norm(values))


def correlation(values: np.ndarray, other: np.ndarray) -> float:
    return float(np.corrcoef(values.ravel(), other.ravel())[0, 1])


def comparison(size: int, values: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    """Return a row of the convergence curve: per rule, how far apart the maps from two backgrounds of size are."""
    return {
        "background_size": size,
        **{f"relative_l2_{name}": relative_distance(values[name], other[name]) for name in values},
        **{f"correlation_{name}": correlation(values[name], other[name]) for name in values},
    }


def convergence_curve(explainers: dict[str, Explainer], pool: np.ndarray, images: np.ndarray, sizes: list[int],
                      rng) -> list[dict]:
    """Return, per size, the distance between each rule's maps from two disjoint backgrounds of that size."""
    rows = []
    for size in sizes:
        print(f"trust: convergence, two backgrounds of {size}")
        first, second = disjoint_backgrounds(pool, size, 2, rng)
        rows.append(comparison(size, explain_all(explainers, first, images), explain_all(explainers, second, images)))
    return rows


def slope(sizes: list[int], distances: list[float]) -> float:
    """Return the least-squares slope of log distance against log size: -0.5 for a mean of independent draws."""
    return float(np.polyfit(np.log(sizes), np.log(distances), 1)[0])


def convergence_metrics(curve: list[dict], background_size: int, compared: int, images: int) -> dict:
    """Return, per rule, the distance between the maps from the pipeline's background and another, and the slope."""
    sizes = [row["background_size"] for row in curve]
    return {"images": images, "background_size": background_size, "compared_size": compared, **{name: {
        "relative_l2": curve[-1][f"relative_l2_{name}"], "correlation": curve[-1][f"correlation_{name}"],
        "slope": slope(sizes, [row[f"relative_l2_{name}"] for row in curve]),
    } for name in RULES}}
