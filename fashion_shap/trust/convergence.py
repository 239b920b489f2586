"""Convergence: how far apart the maps are with two disjoint backgrounds of each size, and the slope
of log distance against log size (-0.5 when the maps settle like a mean of independent draws)."""

import numpy as np

from deepshap import Explainer
from fashion_shap.trust.rules import RULES, explain_all


def images_outside(x_train: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Return the training images that are not in the background (the sample's indices are not kept)."""
    taken = {image.tobytes() for image in background}
    return x_train[np.array([image.tobytes() not in taken for image in x_train])]


def disjoint_draw(pool: np.ndarray, ranges: dict[str, tuple[int, int]], rng) -> np.ndarray:
    """Return a random draw without replacement from pool, as many images as the ranges reach: each range
    (start, stop) of it is a background, disjoint from every range it does not overlap."""
    return pool[rng.choice(len(pool), size=max(stop for _, stop in ranges.values()), replace=False)]


def explain_ranges(explainers: dict[str, Explainer], draw: np.ndarray, images: np.ndarray,
                   ranges: dict[str, tuple[int, int]]) -> dict[str, dict[str, np.ndarray]]:
    """Return, per named range (start, stop) of draw, each rule's values of images against draw[start:stop].

    The values are a mean over references, so a range's are the mean of its pieces' weighted by their
    sizes: each piece between the ranges' ends is explained once (measured: trust's 9 backgrounds of
    5,000, 2 x 100, 2 x 300, 2 x 1,000 and 5 x 1,000 images cost 5,000 references, not 13,800).
    """
    ends = sorted({end for span in ranges.values() for end in span})
    pieces = {}  # start: (size, each rule's sum over the piece's references) float64
    for start, stop in zip(ends, ends[1:]):
        if any(first <= start and stop <= last for first, last in ranges.values()):
            print(f"trust: disjoint backgrounds, references {start} to {stop} of {ends[-1]}")
            values = explain_all(explainers, draw[start:stop], images)
            pieces[start] = {name: rule_values.astype(np.float64) * (stop - start)
                             for name, rule_values in values.items()}
    return {key: {name: (sum(pieces[start][name] for start in pieces if first <= start < last) / (last - first)
                         ).astype(np.float32) for name in explainers}
            for key, (first, last) in ranges.items()}


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


def convergence_ranges(sizes: list[int], compared: int) -> dict[str, tuple[int, int]]:
    """Return the ranges of a draw that the convergence check compares: "compared" (against the pipeline's
    background), and for each size a first and a second background; the firsts all start at 0 and the
    seconds at the largest size, so each size's two are disjoint and the smaller sizes' nest in the larger's."""
    second = max(sizes)
    return {"compared": (0, compared), **{f"first {size}": (0, size) for size in sizes},
            **{f"second {size}": (second, second + size) for size in sizes}}


def convergence_curve(values: dict[str, np.ndarray], ranged: dict[str, dict[str, np.ndarray]], sizes: list[int],
                      compared: int) -> list[dict]:
    """Return, per size, the distance between each rule's maps from the two disjoint backgrounds of that size,
    then for the compared size, between the maps from the pipeline's background (values) and from another."""
    rows = [comparison(size, ranged[f"first {size}"], ranged[f"second {size}"]) for size in sizes]
    return rows + [comparison(compared, values, ranged["compared"])]


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
