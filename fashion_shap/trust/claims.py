"""The lab's three readings (fashion_shap.readings) as claims: in how many disjoint backgrounds each holds."""

from collections import defaultdict

import numpy as np

from fashion_shap.readings import lab_claims


def claims_test(background_values: list[dict[str, np.ndarray]], probabilities: np.ndarray, labels: np.ndarray,
                pixels: np.ndarray) -> dict[str, list[dict]]:
    """Return, per rule, the lab's readings (fashion_shap.readings.lab_claims) of its images against each
    background, from each background's values of each rule."""
    claims = defaultdict(list)
    for values in background_values:
        for name, rule_values in values.items():
            claims[name].append(lab_claims(rule_values, probabilities, labels, pixels))
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
