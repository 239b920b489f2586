"""Explain the model's predictions on the first test image of each class with SHAP values.

Two engines compute the same values (see stages/deeplift.py): "fast", this project's exact
re-implementation of shap.DeepExplainer for the lab's CNN family, streaming the background in
chunks, and "shap", shap.DeepExplainer itself, the reference, for any model.

Reads: the model's weights, the background images and the test directory.
Writes: an explanations directory (images.npy, labels.npy, probabilities.npy and
shap_values.npy in shap's layout (images, 28, 28, 1, classes)) and metrics JSON with the lab's
reading: predicted classes, additivity error, the coat's top 3, and the "diagonal".
"""

import warnings

import numpy as np
import shap
import tensorflow as tf
from tqdm import tqdm

from stages.common import (
    CLASS_NAMES, PipelineError, first_of_each_class, is_terminal, load_split, parse_paths, read_params,
    require_positive, run, save_json, save_npy,
)
from stages.deeplift import FastDeepExplainer
from stages.model import load_model

COAT = CLASS_NAMES.index("Coat")  # the lab reads the top 3 classes of its coat example
TOP = 3
ENGINES = ("fast", "shap")


def shap_values(model, background: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Return shap.DeepExplainer's values, (images, 28, 28, 1, classes), one image at a time for progress."""
    # shap feeds the functional model a list, and traces a graph per class: Keras and TensorFlow
    # warn about both on every call, and cope.
    tf.get_logger().setLevel("ERROR")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        explainer = shap.DeepExplainer(model, background)
        values = [
            explainer.shap_values(image[np.newaxis], check_additivity=False)
            for image in tqdm(images, desc="explain", unit="image", disable=not is_terminal())
        ]
    return np.concatenate(values)


def fast_values(model, background: np.ndarray, images: np.ndarray, chunk_size: int) -> np.ndarray:
    """Return the fast engine's values, (images, 28, 28, 1, classes), with a progress bar over the background."""
    explainer = FastDeepExplainer(model, chunk_size)
    with tqdm(total=len(background), desc="explain", unit="reference", disable=not is_terminal()) as bar:
        return explainer.shap_values(images, background, progress=bar.update)


def explain(model, background: np.ndarray, images: np.ndarray, engine: str, chunk_size: int) -> np.ndarray:
    """Return SHAP values of images in shap's layout, from the engine params.yaml names."""
    if engine == "fast":
        return fast_values(model, background, images, chunk_size)
    return shap_values(model, np.asarray(background), images)


def mean_prediction(model, background: np.ndarray, chunk_size: int) -> np.ndarray:
    """Return the model's mean output over the background, E[f(background)], a chunk at a time."""
    total = np.zeros(model.output_shape[-1])
    for start in range(0, len(background), chunk_size):
        total += model.predict(np.asarray(background[start : start + chunk_size]), verbose=0).sum(axis=0)
    return total / len(background)


def additivity_errors(values: np.ndarray, probabilities: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Return |sum of an image's SHAP values for a class - (f(x) - mean f(background))|, (images, classes)."""
    totals = values.reshape(len(values), -1, values.shape[-1]).sum(axis=1)
    return np.abs(totals - (probabilities - expected))


def additivity_error(values: np.ndarray, probabilities: np.ndarray, expected: np.ndarray) -> float:
    """Return the largest additivity error of any image and class."""
    return float(additivity_errors(values, probabilities, expected).max())


def largest_positive_mass(values: np.ndarray) -> np.ndarray:
    """Return, per image, the class whose SHAP values have the largest positive sum."""
    positive = np.clip(values, 0, None).reshape(len(values), -1, values.shape[-1]).sum(axis=1)
    return positive.argmax(axis=1)


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


def main(argv: list[str] | None = None) -> None:
    params = read_params("explain", {"engine": str, "chunk_size": int})
    if params["engine"] not in ENGINES:
        raise PipelineError(f"params.yaml: explain.engine must be one of {', '.join(ENGINES)}, got {params['engine']!r}")
    require_positive("explain.chunk_size", params["chunk_size"])
    model_path, background_path, test_dir, output_dir, metrics_path = parse_paths(
        "explain", __doc__, ["model", "background", "test_dir", "explanations_dir", "metrics"], argv
    )

    model = load_model(model_path)
    # Memory-mapped: the fast engine reads the background a chunk at a time.
    background = np.load(background_path, mmap_mode="r")
    x_test, y_test = load_split(test_dir)
    images = first_of_each_class(x_test, y_test)
    labels = np.arange(len(images))
    print(f"explain: {images.shape[0]} images against a background of {background.shape[0]}, {params['engine']} engine")

    values = explain(model, background, images, params["engine"], params["chunk_size"])
    probabilities = model.predict(images, verbose=0)
    expected = mean_prediction(model, background, params["chunk_size"])
    metrics = lab_reading(values, probabilities, expected, labels)

    for name, array in (("images", images), ("labels", labels), ("probabilities", probabilities), ("shap_values", values)):
        save_npy(output_dir / f"{name}.npy", array)
    save_json(metrics_path, metrics)
    print(f"explain: additivity error {metrics['additivity_error']:.2e}, diagonal share {metrics['diagonal_share']:.2f}")


if __name__ == "__main__":
    run(main)
