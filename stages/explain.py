"""Explain the model's predictions on the first test image of each class with SHAP values.

Two engines (the deepshap package): "fast", this project's exact re-implementation of
shap.DeepExplainer, streaming the background in chunks, and "shap", shap.DeepExplainer itself, the
reference, for any model. explain.output picks what is explained (the softmax's probabilities or
the logits) and explain.softmax_rule the probabilities' head rule (shap's, or exact Shapley values).

Reads: the model's weights, the background images and the test directory.
Writes: an explanations directory (images.npy, labels.npy, probabilities.npy and
shap_values.npy in shap's layout (images, 28, 28, 1, classes)), metrics JSON with the lab's
reading: predicted classes, additivity error, the coat's top 3, and the "diagonal", and a timing
JSON with the explanation's seconds. The timing is not a stage output: its bytes change from run to
run and machine to machine, while every output's must not; dvc.yaml lists it as a metric only, so
`dvc exp show` compares the engines' times.
"""

import time

import numpy as np
from tqdm import tqdm

from deepshap import shap_reference
from deepshap.reference import logit_model
from stages.common import (
    first_of_each_class, is_terminal, load_split, parse_paths, read_params,
    require_positive, run, save_json, save_npy,
)
from stages.engines import check_engine_params, fast_explainer
from stages.model import load_model
from stages.readings import lab_reading

def check_params(params: dict) -> None:
    """Fail with one line naming the param unless the explain section's values fit together."""
    check_engine_params(params)
    require_positive("explain.chunk_size", params["chunk_size"])


def explain(model, background: np.ndarray, images: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (SHAP values in shap's layout, outputs of images, mean output over the background)."""
    with tqdm(desc="explain", disable=not is_terminal()) as bar:
        if params["engine"] == "shap":
            bar.reset(total=len(images))
            values = shap_reference(model, background, images, params["output"], progress=bar.update)
            keras_model = logit_model(model) if params["output"] == "logit" else model
            outputs = keras_model.predict(images, verbose=0)
            expected = keras_model.predict(np.asarray(background), verbose=0).astype(np.float64).mean(axis=0)
            return values, outputs, expected
        explainer = fast_explainer(model, params["output"], params["softmax_rule"], params["chunk_size"])
        bar.reset(total=len(background))
        values = explainer.shap_values(images, background, progress=bar.update)
    return values, explainer.predict(images), explainer.expected_value(background)


def main(argv: list[str] | None = None) -> None:
    params = read_params("explain", {"engine": str, "output": str, "softmax_rule": str, "chunk_size": int})
    check_params(params)
    model_path, background_path, test_dir, output_dir, metrics_path, timing_path = parse_paths(
        "explain", __doc__, ["model", "background", "test_dir", "explanations_dir", "metrics", "timing"], argv
    )

    model = load_model(model_path)
    # Memory-mapped: the fast engine reads the background a chunk at a time.
    background = np.load(background_path, mmap_mode="r")
    x_test, y_test = load_split(test_dir)
    images = first_of_each_class(x_test, y_test)
    labels = np.arange(len(images))
    print(f"explain: {images.shape[0]} images against a background of {background.shape[0]}, {params['engine']} engine, "
          f"{params['output']} output, {params['softmax_rule']} softmax rule")

    start = time.perf_counter()
    values, probabilities, expected = explain(model, background, images, params)
    seconds = time.perf_counter() - start
    metrics = lab_reading(values, probabilities, expected, labels)

    for name, array in (("images", images), ("labels", labels), ("probabilities", probabilities), ("shap_values", values)):
        save_npy(output_dir / f"{name}.npy", array)
    save_json(metrics_path, metrics)
    save_json(timing_path, {"explain_seconds": round(seconds, 2)})
    print(f"explain: {seconds:.1f} s; additivity error {metrics['additivity_error']:.2e}, "
          f"diagonal share {metrics['diagonal_share']:.2f}")


if __name__ == "__main__":
    run(main)
