"""The mistakes and how concentrated their explanations are.

A pair's region is the tenth of the pixels (REGION_SHARE) where the mean of its mistakes' maps for the
predicted class is largest; a mistake is concentrated there when at least a fifth (CONCENTRATED) of
its positive attribution for the predicted class lies in that region, twice what a tenth of the
pixels drawn at random would hold on average. The metrics give the share of the pair's mistakes that
are concentrated, and the mean of their shares in the region.
"""

from collections import Counter

import numpy as np

from fashion_shap.data import CLASS_NAMES

REGION_SHARE = 0.1  # of the pixels: a pair's region
# Of a mistake's positive attribution inside the region: twice what a region of as many pixels, drawn
# at random, holds on average.
CONCENTRATED = 2 * REGION_SHARE


def find_mistakes(predicted: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (test indices of the misclassified images, their classes (mistakes, 2): [true, predicted]), given each
    test image's predicted class."""
    indices = np.flatnonzero(predicted != labels)
    return indices, np.stack([labels[indices], predicted[indices]], axis=1).astype(np.int64)


def channel_sums(values: np.ndarray) -> np.ndarray:
    """Return (mistakes, 28, 28, 2) float64: the values summed over channels, for the true and the predicted class."""
    return values.astype(np.float64).sum(axis=-2)


def pair_name(true: int, predicted: int) -> str:
    return f"{CLASS_NAMES[true]} -> {CLASS_NAMES[predicted]}"


def pair_counts(classes: np.ndarray) -> Counter:
    """Return how many mistakes each (true, predicted) pair has; classes (mistakes, 2)."""
    return Counter(map(tuple, classes.tolist()))


def top_pairs(classes: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Return the count most frequent (true, predicted) pairs, most frequent first, ties in class order."""
    counts = pair_counts(classes)
    return sorted(counts, key=lambda pair: (-counts[pair], pair))[:count]


def region_shares(predicted_maps: np.ndarray) -> np.ndarray:
    """Return each map's share of its positive values in the region of the maps' mean, (maps,).

    predicted_maps: (maps, 28, 28), the maps of one pair's mistakes for the predicted class.
    """
    flat = predicted_maps.reshape(len(predicted_maps), -1)
    region = np.argsort(-flat.mean(axis=0), kind="stable")[: round(REGION_SHARE * flat.shape[1])]
    positive = np.clip(flat, 0, None)
    totals = positive.sum(axis=1)
    return np.divide(positive[:, region].sum(axis=1), totals, out=np.zeros_like(totals), where=totals > 0)


def mistake_metrics(classes: np.ndarray, maps: np.ndarray, pairs: list[tuple[int, int]], test_size: int) -> dict:
    """Return the metrics: the mistakes, their count per pair, and for the top pairs how concentrated they are."""
    top = {}
    for true, predicted in pairs:
        shares = region_shares(maps[(classes[:, 0] == true) & (classes[:, 1] == predicted), ..., 1])
        top[pair_name(true, predicted)] = {
            "mistakes": len(shares),
            "concentrated_share": round(float(np.mean(shares >= CONCENTRATED)), 6),
            "mean_share_in_region": round(float(shares.mean()), 6),
        }
    return {
        "mistakes": len(classes),
        "error_rate": round(len(classes) / test_size, 6),
        "pairs": {pair_name(*pair): count for pair, count in sorted(pair_counts(classes).items())},
        "top_pairs": top,
    }
