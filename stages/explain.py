"""Explain the model's predictions on the first test image of each class with SHAP values.

Two engines (the deepshap package): "fast", this project's exact re-implementation of
shap.DeepExplainer, streaming the background in chunks, and "shap", shap.DeepExplainer itself, the
reference, for any model. explain.output picks what is explained (the softmax's probabilities or
the logits) and explain.softmax_rule the probabilities' head rule (shap's, or exact Shapley values).

Reads: the model's weights, the background images and the test directory.
Writes: an explanations directory (images.npy, labels.npy, probabilities.npy and shap_values.npy
in shap's layout (images, 28, 28, 1, classes)); metrics JSON, the headline: the share of images on
the lab's diagonal and the additivity error in parts per million; a report JSON with the lab's whole
reading (predicted classes, additivity error, the coat's top 3, the diagonal); and the explanation's
seconds, as `explain_s` in a timing JSON that git holds but no stage declares as an output (its
bytes change from run to run, while every output's must not), so that each experiment carries it.
"""

import time

import numpy as np
from tqdm import tqdm

from fashion_shap.data import first_of_each_class, load_split
from fashion_shap.engines import check_engine_params, make_explainer
from fashion_shap.files import save_arrays, save_json, update_json
from fashion_shap.model import load_model
from fashion_shap.params import is_terminal, parse_paths, read_params, require_positive, run
from fashion_shap.readings import lab_reading


def check_params(params: dict) -> None:
    """Fail with one line naming the param unless the explain section's values fit together."""
    check_engine_params(params)
    require_positive("explain.chunk_size", params["chunk_size"])


def explain(model, background: np.ndarray, images: np.ndarray, params: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (SHAP values in shap's layout, outputs of images, mean output over the background)."""
    explainer = make_explainer(model, params["engine"], params["output"], params["softmax_rule"], params["chunk_size"])
    with tqdm(desc="explain", total=len(background), disable=not is_terminal()) as bar:
        values = explainer.shap_values(images, background, progress=bar.update)
    return values, explainer.predict(images), explainer.expected_value(background)


def headline(report: dict) -> dict:
    """Return the metrics a person compares across experiments, scaled and rounded so that `dvc exp show` prints
    them: the additivity error, some 1e-7 of a probability, in parts per million."""
    return {"diagonal": round(report["diagonal_share"], 4), "additivity_ppm": round(report["additivity_error"] * 1e6, 4)}


def main(argv: list[str] | None = None) -> None:
    params = read_params("explain", {"engine": str, "output": str, "softmax_rule": str, "chunk_size": int})
    check_params(params)
    model_path, background_path, test_dir, output_dir, metrics_path, report_path, timing_path = parse_paths(
        "explain", __doc__, ["model", "background", "test_dir", "explanations_dir", "metrics", "report", "timing"], argv
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
    report = lab_reading(values, probabilities, expected, labels)

    save_arrays(output_dir, {"images": images, "labels": labels, "probabilities": probabilities, "shap_values": values})
    save_json(metrics_path, headline(report))
    save_json(report_path, report)
    update_json(timing_path, {"explain_s": round(seconds, 1)})
    print(f"explain: {seconds:.1f} s; additivity error {report['additivity_error']:.2e}, "
          f"diagonal share {report['diagonal_share']:.2f}")


if __name__ == "__main__":
    run(main)
