"""The lab's three readings (fashion_shap.readings) as claims: in how many disjoint backgrounds each holds."""

from collections import defaultdict

import numpy as np

from deepshap import Explainer
from fashion_shap.readings import lab_claims
from fashion_shap.trust.rules import explain_all


def claims_test(explainers: dict[str, Explainer], images: np.ndarray, probabilities: np.ndarray, labels: np.ndarray,
                backgrounds: list[np.ndarray], pixels: np.ndarray) -> dict[str, list[dict]]:
    """Return, per rule, the lab's readings of images against each background (stages/readings.py's lab_claims)."""
    claims = defaultdict(list)
    for number, background in enumerate(backgrounds, 1):
        print(f"trust: the lab's readings, background {number} of {len(backgrounds)}")
        for name, values in explain_all(explainers, background, images).items():
            claims[name].append(lab_claims(values, probabilities, labels, pixels))
    return dict(claims)


def claims_summary(claims: list[dict]) -> dict:
    """Return, per reading, in how many backgrounds it held and the mean, min and max of each number behind it."""
    summary = {}
    for reading, first in claims[0].items():
        rows = [claim[reading] for claim in claims]
        summary[reading] = {"held": sum(row["holds"] for row in rows), **{
            key: {"mean": float(np.mean(numbers)), "min": float(np.min(numbers)), "max": float(np.max(numbers))}
            for key in first if key != "holds" for numbers in [[row[key] for row in rows]]
        }}
    return summary
