"""evaluate: test accuracy and loss (the headline), accuracy per class (the report) and the confusion-matrix CSV."""

import csv
import json

import numpy as np
from conftest import TEST_SIZE

from fashion_shap.data import CLASS_NAMES
from stages.evaluate import main
from stages.evaluate import test_metrics as compute_metrics

# One epoch on the synthetic data, whose class is a bright row band, classified all 60 test images
# right for every train.seed from 1 to 10; chance is 0.1.
LEARNED = 0.9


def test_metrics_of_known_probabilities():
    probabilities = np.array([[0.9, 0.1] + [0.0] * 8, [0.6, 0.4] + [0.0] * 8, [0.2, 0.8] + [0.0] * 8])
    labels = np.array([0, 1, 1])
    metrics = compute_metrics(probabilities, labels)
    assert metrics["accuracy"] == round(2 / 3, 6)
    assert metrics["loss"] == round(-np.mean(np.log([0.9, 0.4, 0.8])), 6)
    assert metrics["per_class_accuracy"] == {"T-shirt/top": 1.0, "Trouser": 0.5}


def test_the_trained_model_recognises_every_synthetic_class(prepared, tmp_path):
    main([str(prepared / "models/model.weights.h5"), str(prepared / "data/test"),
          str(tmp_path / "evaluate.json"), str(tmp_path / "report.json"), str(tmp_path / "confusion.csv")])
    metrics = json.loads((tmp_path / "report.json").read_text())
    assert metrics["accuracy"] >= LEARNED
    # The headline, for `dvc exp show`: accuracy and loss alone, rounded to 4 digits.
    headline = json.loads((tmp_path / "evaluate.json").read_text())
    assert headline == {"accuracy": round(metrics["accuracy"], 4), "loss": round(metrics["loss"], 4)}
    assert set(metrics["per_class_accuracy"]) == set(CLASS_NAMES)
    assert min(metrics["per_class_accuracy"].values()) >= 0.5  # no class left to chance

    with open(tmp_path / "confusion.csv") as file:
        rows = list(csv.DictReader(file))
    labels = np.load(prepared / "data/test/y.npy")
    assert [row["actual"] for row in rows] == [CLASS_NAMES[label] for label in labels]
    correct = sum(row["actual"] == row["predicted"] for row in rows)
    assert round(correct / TEST_SIZE, 6) == metrics["accuracy"]
