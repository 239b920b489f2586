"""What the pipeline reads off SHAP values: completeness, the lab's reading, and its claims.

Shared by the explain and trust stages (and the mistakes stage); not a stage itself.
"""

import numpy as np

from stages.common import CLASS_NAMES

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


def lab_reading(values: np.ndarray, probabilities: np.ndarray, expected: np.ndarray, labels: np.ndarray) -> dict:
    """Return the metrics the lab reads off its figure."""
    predicted = probabilities.argmax(axis=1)
    diagonal = largest_positive_mass(values)
    coat_row = int(np.nonzero(labels == COAT)[0][0])
    top = np.argsort(probabilities[coat_row])[::-1][:TOP]
    return {
        "predicted_class": {CLASS_NAMES[label]: int(p) for label, p in zip(labels, predicted)},
        "largest_positive_shap_class": {CLASS_NAMES[label]: int(d) for label, d in zip(labels, diagonal)},
        "diagonal_share": float(np.mean(diagonal == labels)),
        "additivity_error": additivity_error(values, probabilities, expected),
        "coat_top3": {
            str(rank + 1): {"class": CLASS_NAMES[c], "probability": round(float(probabilities[coat_row, c]), 6)}
            for rank, c in enumerate(top)
        },
    }
