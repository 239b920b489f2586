"""Deletion (Petsiuk et al. 2018): replacing pixels with the background's mean in the order of their
value should drop the class's probability faster than random or reverse order, for each rule."""

from collections import defaultdict
from collections.abc import Callable

import numpy as np


def deletion_curves(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, orders: np.ndarray,
                    fill: np.ndarray, steps: int, target: int) -> np.ndarray:
    """Return the probability of target as pixels are replaced by fill in each order: (orders, steps + 1)."""
    counts = np.linspace(0, image.size, steps + 1).round().astype(int)
    batch = np.repeat(image.reshape(1, -1), len(orders) * len(counts), axis=0)
    for row, (order, count) in enumerate((o, c) for o in orders for c in counts):
        batch[row, order[:count]] = fill.ravel()[order[:count]]
    probabilities = predict(batch.reshape((-1,) + image.shape))[:, target]
    return probabilities.reshape(len(orders), len(counts))


def deletion_test(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, predicted: np.ndarray,
                  maps: dict[str, np.ndarray], fill: np.ndarray, steps: int, random_orders: int, rng
                  ) -> dict[str, np.ndarray]:
    """Return the deletion curves of every image, (images, steps + 1): in random order, and in each rule's
    order ("<rule>_order") and its reverse ("<rule>_reverse_order").

    predict: images (n, *image shape) -> the model's probabilities (n, classes).
    predicted: each image's predicted class (images,), whose probability the curves follow.
    maps: per rule, each image's map for its predicted class (images, *image shape); a rule orders the
    image's pixels by it, largest first. All rules share the random orders.
    """
    print(f"trust: deletion test, {len(images)} images")
    curves = defaultdict(list)
    for index, (image, target) in enumerate(zip(images, predicted)):
        rankings = {name: np.argsort(-rule_maps[index].ravel(), kind="stable") for name, rule_maps in maps.items()}
        randoms = [rng.permutation(image.size) for _ in range(random_orders)]
        orders = np.stack(randoms + [order for ranking in rankings.values() for order in (ranking, ranking[::-1])])
        probabilities = deletion_curves(predict, image, orders, fill, steps, target)
        curves["random_order"].append(probabilities[:random_orders].mean(axis=0))
        for offset, name in enumerate(rankings):
            curves[f"{name}_order"].append(probabilities[random_orders + 2 * offset])
            curves[f"{name}_reverse_order"].append(probabilities[random_orders + 2 * offset + 1])
    return {name: np.array(rows) for name, rows in curves.items()}


def area(curves: np.ndarray) -> np.ndarray:
    """Return the area under each curve over the removed fraction 0..1."""
    return np.trapezoid(curves, dx=1 / (curves.shape[-1] - 1), axis=-1)


def deletion_metrics(curves: dict[str, np.ndarray], rules) -> dict:
    """Return the mean areas under the deletion curves, and per rule the share of images its order beats random on."""
    areas = {name: area(rows) for name, rows in curves.items()}
    return {"auc_random_order": float(areas["random_order"].mean()), **{name: {
        "auc_rule_order": float(areas[f"{name}_order"].mean()),
        "auc_reverse_order": float(areas[f"{name}_reverse_order"].mean()),
        "faithful_share": float(np.mean(areas[f"{name}_order"] < areas["random_order"])),
    } for name in rules}}
