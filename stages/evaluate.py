"""Evaluate the trained model on the test set.

Reads: the model's weights and the test directory written by preprocess.
Writes: metrics JSON (accuracy, loss, accuracy per class) and a CSV of (actual, predicted)
class names per test image, which `dvc plots` draws as a confusion matrix.
"""

import csv
from pathlib import Path

import numpy as np

from stages.common import CLASS_NAMES, NUM_CLASSES, atomic_path, load_split, parse_paths, run, save_json
from stages.model import load_model

EPSILON = 1e-7  # Keras' own clip, so a probability of 0 gives a finite loss


def test_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """Return accuracy, cross-entropy loss and per-class accuracy of (N, classes) probabilities."""
    predicted = probabilities.argmax(axis=1)
    true_probability = probabilities[np.arange(len(labels)), labels]
    per_class = {
        CLASS_NAMES[label]: round(float(np.mean(predicted[labels == label] == label)), 6)
        for label in range(NUM_CLASSES)
        if np.any(labels == label)
    }
    return {
        "accuracy": round(float(np.mean(predicted == labels)), 6),
        "loss": round(float(-np.mean(np.log(np.clip(true_probability, EPSILON, 1.0)))), 6),
        "per_class_accuracy": per_class,
    }


def write_confusion(path: Path, labels: np.ndarray, predicted: np.ndarray) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["actual", "predicted"])
        writer.writerows((CLASS_NAMES[a], CLASS_NAMES[p]) for a, p in zip(labels, predicted))


def main(argv: list[str] | None = None) -> None:
    model_path, test_dir, metrics_path, confusion_path = parse_paths(
        "evaluate", __doc__, ["model", "test_dir", "metrics", "confusion"], argv
    )

    x_test, y_test = load_split(test_dir)
    model = load_model(model_path)
    probabilities = model.predict(x_test, verbose=0)

    metrics = test_metrics(probabilities, y_test)
    save_json(metrics_path, metrics)
    write_confusion(confusion_path, y_test, probabilities.argmax(axis=1))
    print(f"evaluate: test accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f}")


if __name__ == "__main__":
    run(main)
