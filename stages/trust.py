"""Measure how far the SHAP explanations can be trusted, for three rules of the model's softmax head.

The rules (the deepshap package): "shap", shap.DeepExplainer's softmax rule, as the lab; "shapley",
the exact Shapley values of the softmax over the logits; "logit", the logits explained, no softmax.
The lab's ten images (the first test image of each class), all classes, are checked for:
- completeness: how far each image's values miss f(x) - E f(background), per class;
- convergence: how far apart the maps are with two disjoint backgrounds of each size, and the slope
  of log distance against log size (-0.5 when the maps settle like a mean of independent draws);
- per-reference diagnostics: each of the first background images' own contribution to the maps (the
  values are a mean over references, so a background of one is exact): the share of their squared
  norm the largest 1 and 5 carry, the effective number of references, the largest multiplier;
- the lab's three readings (fashion_shap/readings.py) as claims: in how many disjoint backgrounds each holds.
The first few test images of each class, their predicted class's map only, are checked for:
- deletion (Petsiuk et al. 2018): replacing pixels with the background's mean in the order of their
  value should drop the class's probability faster than random or reverse order, for each rule;
- model randomization (Adebayo et al. 2018), for the lab's rule: with the weights re-initialised layer
  by layer from the top, faithful explanations should stop resembling the trained model's.

Reads: the model's weights, the background, the train directory (for the disjoint backgrounds and
the mean Pullover) and the test directory.
Writes: metrics JSON, the headline: per rule, the relative L2 distance between the maps from the
pipeline's background and a disjoint one of its size; a report JSON with every check's figures; the
deletion and convergence curves as CSV; a PNG of the randomization check and a PNG of maps from two
disjoint backgrounds side by side.
"""

import numpy as np
import tensorflow as tf

from fashion_shap.data import CLASS_NAMES, first_of_each_class, load_split
from fashion_shap.engines import check_engine_params
from fashion_shap.figures import save_figure
from fashion_shap.files import save_csv, save_json
from fashion_shap.model import load_model
from fashion_shap.params import (
    PipelineError,
    check_type,
    parse_paths,
    read_params,
    require_at_most,
    require_positive,
    run,
)
from fashion_shap.readings import PULLOVER, T_SHIRT, diagonal_share, sleeve_pixels
from fashion_shap.trust.claims import claims_summary, claims_test
from fashion_shap.trust.completeness import completeness
from fashion_shap.trust.convergence import (
    convergence_curve,
    convergence_metrics,
    convergence_ranges,
    disjoint_draw,
    explain_ranges,
    images_outside,
)
from fashion_shap.trust.deletion import deletion_metrics, deletion_test
from fashion_shap.trust.diagnostics import diagnostics
from fashion_shap.trust.figures import FIGURE_IMAGES, backgrounds_figure, most_moved, randomization_figure
from fashion_shap.trust.randomization import randomization_check
from fashion_shap.trust.rules import RULES, explain_all, predicted_maps, rule_explainers


def read_trust_params() -> dict:
    """Return the trust section of params.yaml, each value checked (one line naming the key otherwise)."""
    params = read_params("trust", {
        "seed": int, "images_per_class": int, "convergence_sizes": list, "diagnostics_size": int,
        "deletion_steps": int, "random_orders": int, "randomization_background": int,
        "randomization_threshold": float, "readings_backgrounds": int, "readings_size": int,
        "sleeves_blank_below": float, "sleeves_pullover_above": float, "chunk_size": int,
    })
    for key in ("images_per_class", "diagnostics_size", "deletion_steps", "random_orders", "randomization_background",
                "readings_backgrounds", "readings_size", "chunk_size"):
        require_positive(f"trust.{key}", params[key])
    for size in params["convergence_sizes"]:
        require_positive("trust.convergence_sizes", check_type("trust.convergence_sizes", size, int))
    for key in ("sleeves_blank_below", "sleeves_pullover_above"):
        if not 0 <= params[key] <= 1:
            raise PipelineError(f"params.yaml: trust.{key} must be between 0 and 1, as pixels are, got {params[key]}")
    # The explain section's engine, where it is the accelerated one; else the fast engine (the shap engine has
    # neither the Shapley rule nor the head's multipliers that the checks read).
    engine = read_params("explain", {"engine": str})["engine"]
    check_engine_params({"engine": engine, "output": "probability", "softmax_rule": "shap"})
    params["engine"] = "accelerated" if engine == "accelerated" else "fast"
    return params


def check_pool(params: dict, pool_size: int, compared: int, background_size: int) -> None:
    """Fail with one line unless the background holds the first images the diagnostics and the randomization
    check take, the training images outside it suffice for the disjoint backgrounds, and the convergence
    curve has two sizes to fit a slope to."""
    for key in ("diagnostics_size", "randomization_background"):
        require_at_most(f"trust.{key}", params[key], background_size, "the background")
    for size in params["convergence_sizes"]:
        if 2 * size > pool_size:
            raise PipelineError(
                f"trust.convergence_sizes holds {size}, but only {pool_size} training images are outside the "
                f"background, too few for two disjoint backgrounds of {size}; lower it in params.yaml"
            )
    if set(params["convergence_sizes"]) <= {compared}:
        raise PipelineError(f"trust.convergence_sizes needs a size other than the background's {compared}, to fit "
                            f"the slope of the convergence curve; add one in params.yaml")
    needed = params["readings_backgrounds"] * params["readings_size"]
    if needed > pool_size:
        raise PipelineError(
            f"trust.readings_backgrounds x trust.readings_size is {needed} images, but only {pool_size} training "
            f"images are outside the background; lower them in params.yaml"
        )


def print_summary(report: dict) -> None:
    """Print one line per rule: its convergence, deletion area and readings."""
    for name in RULES:
        convergence, readings = report["convergence"][name], report["readings"][name]
        held = ", ".join(f"{reading} {summary['held']}" for reading, summary in readings.items())
        print(f"trust: {name} rule: background distance {convergence['relative_l2']:.3f} (slope "
              f"{convergence['slope']:.2f}), deletion AUC {report['deletion'][name]['auc_rule_order']:.3f}, "
              f"readings held {held} of {report['readings']['backgrounds']}")


def lab_sleeves(t_shirt: np.ndarray, x_train: np.ndarray, y_train: np.ndarray, params: dict) -> np.ndarray:
    """Return the sleeve pixels of the lab's T-shirt image against the mean training Pullover, or fail if none."""
    pixels = sleeve_pixels(t_shirt, x_train[y_train == PULLOVER].mean(axis=0), params["sleeves_blank_below"],
                           params["sleeves_pullover_above"])
    if not pixels.any():
        raise PipelineError("trust.sleeves_blank_below and trust.sleeves_pullover_above select no pixel of the "
                            "T-shirt image; raise the first or lower the second in params.yaml")
    return pixels



def disjoint_values(explainers: dict, pool: np.ndarray, lab_images: np.ndarray, compared: int, params: dict, rng
                    ) -> tuple[dict, list[dict]]:
    """Return each rule's values of the lab's images against the backgrounds the checks compare, all drawn at once
    from the pool (explain_ranges): the convergence check's, by name, and the readings' disjoint ones, in a list."""
    size, count = params["readings_size"], params["readings_backgrounds"]
    ranges = convergence_ranges(params["convergence_sizes"], compared)
    ranges.update({f"readings {number}": (number * size, (number + 1) * size) for number in range(count)})
    ranged = explain_ranges(explainers, disjoint_draw(pool, ranges, rng), lab_images, ranges)
    return ranged, [ranged[f"readings {number}"] for number in range(count)]


def measure(model, background: np.ndarray, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
            y_test: np.ndarray, params: dict) -> tuple[dict, dict]:
    """Run every check; return (the report, what the CSV files and figures draw)."""
    pool = images_outside(x_train, background)
    compared = min(len(background), len(pool))
    check_pool(params, len(pool), compared, len(background))
    per_class = params["images_per_class"]
    images = first_of_each_class(x_test, y_test, per_class)
    lab = np.arange(0, len(images), per_class)  # the lab's ten images, the first of each class
    lab_images, labels = images[lab], np.arange(len(CLASS_NAMES))
    pixels = lab_sleeves(lab_images[T_SHIRT], x_train, y_train, params)
    rng = np.random.default_rng(params["seed"])
    explainers = rule_explainers(model, params["chunk_size"], params["engine"])
    # The engine's forward pass, not Keras' predict: the fast engine's probabilities of an image are the same on any
    # CPU and whatever images share its batch (measured: through Keras' predict, oneDNN at AVX2 moved the deletion
    # curves' last digits); the accelerated engine's are its device's.
    predict = explainers["shap"].predict
    probabilities = predict(images)
    predicted = probabilities.argmax(axis=1)

    print(f"trust: the lab's {len(lab_images)} images against the background of {len(background)}, "
          f"rules {', '.join(RULES)}")
    values = explain_all(explainers, background, lab_images)
    ranged, readings_values = disjoint_values(explainers, pool, lab_images, compared, params, rng)
    other, curve = ranged["compared"], convergence_curve(values, ranged, params["convergence_sizes"], compared)
    references = background[: params["diagnostics_size"]]
    print(f"trust: diagnostics, {len(references)} references one at a time")
    per_reference = diagnostics(explainers, lab_images, references)
    maps = predicted_maps(explainers, background, images, predicted, lab, values)
    deletion = deletion_test(predict, images, predicted, maps, background.mean(axis=0), params["deletion_steps"],
                             params["random_orders"], rng)
    randomization, trained, randomized = randomization_check(model, images, background, maps["shap"], params,
                                                             predicted)
    claims = claims_test(readings_values, probabilities[lab], labels, pixels)

    report = {
        "images": len(images),
        "completeness": completeness(explainers, values, lab_images, background),
        "convergence": convergence_metrics(curve, len(background), compared, len(lab_images)),
        "diagnostics": {"references": len(references), **per_reference},
        "deletion": deletion_metrics(deletion, RULES),
        "randomization": randomization,
        "diagonal_share": {name: diagonal_share(rule_values, labels) for name, rule_values in values.items()},
        "readings": {
            "backgrounds": len(readings_values), "size": params["readings_size"], "sleeve_pixels": int(pixels.sum()),
            **{name: claims_summary(rule_claims) for name, rule_claims in claims.items()},
        },
    }
    shown = most_moved(values["shap"], other["shap"], predicted[lab], FIGURE_IMAGES)
    drawn = {
        "deletion": deletion, "curve": curve, "compared": compared,
        "randomization": (lab_images, trained[lab], [v[lab] for v in randomized], predicted[lab]),
        "backgrounds": (lab_images[shown], {name: v[shown] for name, v in values.items()},
                        {name: v[shown] for name, v in other.items()}, predicted[lab][shown]),
    }
    return report, drawn


def headline(report: dict) -> dict:
    """Return the metrics a person compares across experiments: per rule, how far apart its maps from two
    disjoint backgrounds of the pipeline's size are (README, "Which rule to trust")."""
    return {name: {"l2": round(report["convergence"][name]["relative_l2"], 4)} for name in RULES}


def main(argv: list[str] | None = None) -> None:
    params = read_trust_params()
    (model_path, background_path, train_dir, test_dir, metrics_path, report_path, deletion_path, convergence_path,
     randomization_path, backgrounds_path) = parse_paths("trust", __doc__, [
        "model", "background", "train_dir", "test_dir", "metrics", "report", "deletion_csv", "convergence_csv",
        "randomization_png", "backgrounds_png",
    ], argv)

    # Each explanation traces the engine's forward pass anew; TensorFlow warns from the sixth on.
    tf.get_logger().setLevel("ERROR")
    model = load_model(model_path)
    background = np.load(background_path)
    x_train, y_train = load_split(train_dir)
    x_test, y_test = load_split(test_dir)
    report, drawn = measure(model, background, x_train, y_train, x_test, y_test, params)

    save_json(metrics_path, headline(report))
    save_json(report_path, report)
    save_csv(deletion_path, [
        {"fraction_removed": fraction, **{name: curves[:, step].mean() for name, curves in drawn["deletion"].items()}}
        for step, fraction in enumerate(np.linspace(0, 1, params["deletion_steps"] + 1))
    ])
    save_csv(convergence_path, sorted(drawn["curve"], key=lambda row: row["background_size"]))
    save_figure(randomization_figure(*drawn["randomization"]), randomization_path)
    save_figure(backgrounds_figure(*drawn["backgrounds"], drawn["compared"]), backgrounds_path)
    print_summary(report)


if __name__ == "__main__":
    run(main)
