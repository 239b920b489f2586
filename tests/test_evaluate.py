"""evaluate: test accuracy, loss, accuracy per class and the confusion-matrix CSV."""

import csv
import json

import numpy as np
from conftest import TEST_SIZE, run_stage

from stages.common import CLASS_NAMES
from stages.evaluate import test_metrics as compute_metrics


def test_metrics_of_known_probabilities():
    probabilities = np.array([[0.9, 0.1] + [0.0] * 8, [0.6, 0.4] + [0.0] * 8, [0.2, 0.8] + [0.0] * 8])
    labels = np.array([0, 1, 1])
    metrics = compute_metrics(probabilities, labels)
    assert metrics["accuracy"] == round(2 / 3, 6)
    assert metrics["loss"] == round(-np.mean(np.log([0.9, 0.4, 0.8])), 6)
    assert metrics["per_class_accuracy"] == {"T-shirt/top": 1.0, "Trouser": 0.5}


def test_writes_metrics_and_confusion_csv(prepared):
    run_stage("evaluate", "models/model.weights.h5", "data/test", "out/evaluate.json", "out/confusion.csv", cwd=prepared)
    metrics = json.loads((prepared / "out/evaluate.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    assert set(metrics["per_class_accuracy"]) == set(CLASS_NAMES)
    with open(prepared / "out/confusion.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == TEST_SIZE
    assert {row["actual"] for row in rows} == set(CLASS_NAMES)
    correct = sum(row["actual"] == row["predicted"] for row in rows)
    assert round(correct / TEST_SIZE, 6) == metrics["accuracy"]
