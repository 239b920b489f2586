"""Evaluate the trained model on the test set.

Reads: the model's weights and the test directory written by preprocess.
Writes: metrics JSON (the test accuracy and loss, the headline), a report JSON (the same, and the
accuracy per class) and a CSV of (actual, predicted) class names per test image, which `dvc plots`
draws as a confusion matrix.
"""

import numpy as np

from fashion_shap.data import CLASS_NAMES, NUM_CLASSES, load_split, prediction_rows
from fashion_shap.files import save_csv, save_json
from fashion_shap.model import load_model
from fashion_shap.params import parse_paths, run

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


def headline(report: dict) -> dict:
    """Return the metrics a person compares across experiments, rounded as `dvc exp show` prints them."""
    return {"accuracy": round(report["accuracy"], 4), "loss": round(report["loss"], 4)}


def main(argv: list[str] | None = None) -> None:
    model_path, test_dir, metrics_path, report_path, confusion_path = parse_paths(
        "evaluate", __doc__, ["model", "test_dir", "metrics", "report", "confusion"], argv
    )

    x_test, y_test = load_split(test_dir)
    model = load_model(model_path)
    probabilities = model.predict(x_test, verbose=0)

    report = test_metrics(probabilities, y_test)
    save_json(metrics_path, headline(report))
    save_json(report_path, report)
    save_csv(confusion_path, prediction_rows(y_test, probabilities.argmax(axis=1)))
    print(f"evaluate: test accuracy {report['accuracy']:.4f}, loss {report['loss']:.4f}")


if __name__ == "__main__":
    run(main)
