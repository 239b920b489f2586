"""Explain every test image the model gets wrong, for its true and its predicted class, on Ray.

Finds the misclassified test images and explains each against the first mistakes.background_size
images of the pipeline's background, with the explain stage's engine, output and softmax rule. The
images go out in shards of mistakes.shard_size to Ray workers: a local Ray with one worker per core
when mistakes.ray_address is empty, else the cluster at that address ("auto", "host:port" or
"ray://host:port"). The bytes are the same for any number of workers and any shard size, and without
Ray (fashion_shap/mistakes/shards.py).

Reads: the model's weights, the background, the test directory and the evaluate stage's predictions
(a CSV of actual and predicted class names per test image): the stage's own process never loads
TensorFlow, only its workers do.
Writes: a directory (shap_values.npy (mistakes, 28, 28, 1, 2), whose last axis holds the true class
then the predicted one; test_indices.npy, true_classes.npy, predicted_classes.npy), metrics JSON
(the headline: how many mistakes), a report JSON (their error rate, count per pair, and how
concentrated the most frequent pairs' maps are) and a PNG of the most frequent confusion pairs: example maps, and the pair's mean map of
(predicted class minus true class).

Concentration, in the report: see fashion_shap/mistakes/concentration.py.
"""

import numpy as np

from fashion_shap.data import load_predicted, load_split
from fashion_shap.engines import check_engine_params
from fashion_shap.figures import save_figure
from fashion_shap.files import save_arrays, save_json
from fashion_shap.mistakes.concentration import channel_sums, find_mistakes, mistake_metrics, top_pairs
from fashion_shap.mistakes.figure import pairs_figure
from fashion_shap.mistakes.shards import check_reachable, explain_on_ray, model_file
from fashion_shap.params import parse_paths, read_params, require_at_most, require_positive, run


def read_settings() -> tuple[dict, dict]:
    """Return (the engine's settings, the mistakes params), checked; a cluster address must answer now."""
    settings = read_params("explain", {"engine": str, "output": str, "softmax_rule": str})
    check_engine_params(settings)
    params = read_params("mistakes", {
        "background_size": int, "shard_size": int, "chunk_size": int, "top_pairs": int, "ray_address": str,
    })
    for key in ("background_size", "shard_size", "chunk_size", "top_pairs"):
        require_positive(f"mistakes.{key}", params[key])
    settings["chunk_size"] = params["chunk_size"]
    if params["ray_address"]:
        params["ray_address"] = check_reachable(params["ray_address"])
    return settings, params


def main(argv: list[str] | None = None) -> None:
    settings, params = read_settings()
    model_path, background_path, test_dir, predictions_path, output_dir, metrics_path, report_path, figure_path = (
        parse_paths("mistakes", __doc__, ["model", "background", "test_dir", "predictions", "mistakes_dir", "metrics",
                                          "report", "figure"], argv)
    )

    weights = model_file(model_path)  # loaded by the workers
    background = np.load(background_path, mmap_mode="r")
    require_at_most("mistakes.background_size", params["background_size"], len(background), "the background")
    background = background[: params["background_size"]]
    x_test, y_test = load_split(test_dir)
    indices, classes = find_mistakes(load_predicted(predictions_path, len(y_test)), y_test)
    images = x_test[indices]
    print(f"mistakes: {len(indices)} of {len(x_test)} test images misclassified, explained against "
          f"{len(background)} background images, {settings['engine']} engine, {settings['output']} output")

    values = explain_on_ray(params["ray_address"], None, weights, background, images, classes, settings,
                            params["shard_size"])
    maps = channel_sums(values)
    pairs = top_pairs(classes, params["top_pairs"])
    report = mistake_metrics(classes, maps, pairs, len(x_test))

    save_arrays(output_dir, {"shap_values": values, "test_indices": indices, "true_classes": classes[:, 0],
                             "predicted_classes": classes[:, 1]})
    save_json(metrics_path, {"mistakes": report["mistakes"]})
    save_json(report_path, report)
    save_figure(pairs_figure(images, classes, maps, indices, pairs), figure_path)
    counts = ", ".join(f"{name}: {top['mistakes']}" for name, top in report["top_pairs"].items())
    print(f"mistakes: the most frequent pairs, {counts}")


if __name__ == "__main__":
    run(main)
