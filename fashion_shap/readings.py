"""What the pipeline reads off SHAP values: completeness, the lab's reading, and its claims.

Read by the explain stage (the lab's reading) and the trust stage (completeness, and the readings as
claims checked on other backgrounds). Values are in shap's layout, (images, rows, columns, channels,
classes); labels name each image's true class.
"""

import numpy as np

from fashion_shap.data import CLASS_NAMES

T_SHIRT = CLASS_NAMES.index("T-shirt/top")  # the lab reads the sleeves off its T-shirt example
PULLOVER = CLASS_NAMES.index("Pullover")
COAT = CLASS_NAMES.index("Coat")  # the lab reads the top 3 classes of its coat example
TOP = 3


def additivity_errors(values: np.ndarray, outputs: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Return |sum of an image's SHAP values for a class - (f(x) - mean f(background))|, (images, classes)."""
    totals = values.reshape(len(values), -1, values.shape[-1]).astype(np.float64).sum(axis=1)
    return np.abs(totals - (outputs - expected))


def additivity_error(values: np.ndarray, outputs: np.ndarray, expected: np.ndarray) -> float:
    """Return the largest additivity error of any image and class."""
    return float(additivity_errors(values, outputs, expected).max())


def positive_mass(values: np.ndarray) -> np.ndarray:
    """Return each image's sum of positive SHAP values per class, (images, classes)."""
    return np.clip(values, 0, None).reshape(len(values), -1, values.shape[-1]).sum(axis=1)


def largest_positive_mass(values: np.ndarray) -> np.ndarray:
    """Return, per image, the class whose SHAP values have the largest positive sum."""
    return positive_mass(values).argmax(axis=1)


def diagonal_share(values: np.ndarray, labels: np.ndarray) -> float:
    """Return the share of images whose own class holds their largest positive SHAP mass (the lab's diagonal)."""
    return float(np.mean(largest_positive_mass(values) == labels))


def top_classes(scores: np.ndarray, count: int = TOP) -> np.ndarray:
    """Return the count classes of largest score, largest first; ties in class order."""
    return np.argsort(-scores, kind="stable")[:count]


def lab_reading(values: np.ndarray, probabilities: np.ndarray, expected: np.ndarray, labels: np.ndarray) -> dict:
    """Return the metrics the lab reads off its figure."""
    predicted = probabilities.argmax(axis=1)
    diagonal = largest_positive_mass(values)
    coat_row = row_of(labels, COAT)
    top = top_classes(probabilities[coat_row])
    return {
        "predicted_class": {CLASS_NAMES[label]: int(p) for label, p in zip(labels, predicted)},
        "largest_positive_shap_class": {CLASS_NAMES[label]: int(d) for label, d in zip(labels, diagonal)},
        "diagonal_share": diagonal_share(values, labels),
        "additivity_error": additivity_error(values, probabilities, expected),
        "coat_top3": {
            str(rank + 1): {"class": CLASS_NAMES[c], "probability": round(float(probabilities[coat_row, c]), 6)}
            for rank, c in enumerate(top)
        },
    }


def row_of(labels: np.ndarray, label: int) -> int:
    """Return the row of the first image of class label."""
    return int(np.nonzero(labels == label)[0][0])


def diagonal_claim(values: np.ndarray, labels: np.ndarray) -> dict:
    """The lab's diagonal: every image's own class holds its largest positive SHAP mass; share: of the images."""
    share = diagonal_share(values, labels)
    return {"holds": share == 1.0, "share": share}


def coat_claim(values: np.ndarray, probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """The lab's coat: its 3 classes of largest positive SHAP mass are its 3 most probable classes, in any order.

    The lab reads them as the classes the model "had reasons" for; shared_top3 counts the classes in both.
    """
    row = row_of(labels, COAT)
    by_mass = top_classes(positive_mass(values[row : row + 1])[0])
    by_probability = top_classes(probabilities[row])
    shared = len(set(by_mass.tolist()) & set(by_probability.tolist()))
    return {"holds": shared == TOP, "shared_top3": shared}


def sleeve_pixels(t_shirt: np.ndarray, mean_pullover: np.ndarray, blank_below: float, filled_above: float
                  ) -> np.ndarray:
    """Return where the T-shirt image is blank but the mean Pullover is not: where long sleeves would be.

    t_shirt and mean_pullover: one image each (rows, columns, channels), pixels in [0, 1]; returns bool, that shape.
    """
    return (t_shirt < blank_below) & (mean_pullover > filled_above)


def sleeves_claim(values: np.ndarray, labels: np.ndarray, pixels: np.ndarray) -> dict:
    """The lab's sleeves: over pixels (sleeve_pixels), the T-shirt image's values sum above 0 for
    T-shirt/top and below 0 for Pullover ("white pixels where long sleeves would be push towards
    T-shirt and away from pullover")."""
    sums = values[row_of(labels, T_SHIRT)][pixels].astype(np.float64).sum(axis=0)  # (classes,)
    t_shirt, pullover = float(sums[T_SHIRT]), float(sums[PULLOVER])
    return {"holds": t_shirt > 0 > pullover, "t_shirt_sum": t_shirt, "pullover_sum": pullover}


def lab_claims(values: np.ndarray, probabilities: np.ndarray, labels: np.ndarray, pixels: np.ndarray) -> dict:
    """Return the lab's three readings of one explanation, each with whether it holds and the numbers behind it."""
    return {
        "diagonal": diagonal_claim(values, labels),
        "coat": coat_claim(values, probabilities, labels),
        "sleeves": sleeves_claim(values, labels, pixels),
    }
