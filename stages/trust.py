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
- the lab's three readings (stages/readings.py) as claims: in how many disjoint backgrounds each holds.
The first few test images of each class, their predicted class's map only, are checked for:
- deletion (Petsiuk et al. 2018): replacing pixels with the background's mean in the order of their
  value should drop the class's probability faster than random or reverse order, for each rule;
- model randomization (Adebayo et al. 2018), for the lab's rule: with the weights re-initialised layer
  by layer from the top, faithful explanations should stop resembling the trained model's.

Reads: the model's weights, the background, the train directory (for the disjoint backgrounds and
the mean Pullover) and the test directory.
Writes: metrics JSON, the deletion and convergence curves as CSV, a PNG of the randomization check
and a PNG of maps from two disjoint backgrounds side by side.
"""

from collections import defaultdict
from pathlib import Path

import keras
import matplotlib
import tensorflow as tf

matplotlib.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from deepshap import Explainer  # noqa: E402
from stages.common import (  # noqa: E402
    CLASS_NAMES, PipelineError, atomic_path, check_type, first_of_each_class, load_split, parse_paths, read_params,
    require_positive, run, save_figure, save_json,
)
from stages.model import load_model  # noqa: E402
from stages.readings import (  # noqa: E402
    PULLOVER, T_SHIRT, additivity_errors, lab_claims, largest_positive_mass, sleeve_pixels,
)

# Each rule as the engine's (output, softmax_rule); the logits have no softmax rule.
RULES = {"shap": ("probability", "shap"), "shapley": ("probability", "shapley"), "logit": ("logit", "shap")}
FIGURE_IMAGES = 4  # images in each figure
TOP_REFERENCES = 5  # the diagnostics' second share: of the largest 5 references


def fast_values(model, background: np.ndarray, images: np.ndarray, chunk_size: int, classes: np.ndarray
                ) -> np.ndarray:
    """Return the lab's rule's map of each image for its class in classes, (images, 28, 28, 1)."""
    return Explainer(model, chunk_size=chunk_size).shap_values(images, background, classes[:, np.newaxis])[..., 0]


def rule_explainers(model, chunk_size: int) -> dict[str, Explainer]:
    return {name: Explainer(model, output, rule, chunk_size) for name, (output, rule) in RULES.items()}


def explain_all(explainers: dict[str, Explainer], background: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
    """Return each rule's values of images against background, (images, 28, 28, 1, classes) each."""
    return {name: explainer.shap_values(images, background) for name, explainer in explainers.items()}


def class_maps(explainers: dict[str, Explainer], background: np.ndarray, images: np.ndarray, classes: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Return each rule's map of each image for its class in classes, (images, 28, 28, 1) each.

    A third of the time of all ten classes' values (measured), for the checks that read one class.
    """
    return {name: explainer.shap_values(images, background, classes[:, np.newaxis])[..., 0]
            for name, explainer in explainers.items()}


def predicted_maps(explainers: dict[str, Explainer], background: np.ndarray, images: np.ndarray, classes: np.ndarray,
                   rows: np.ndarray, known: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return each rule's map of each image for its class in classes, (images, 28, 28, 1) each, taking
    the images at rows from known (each rule's values of images[rows] for all classes, against background)."""
    maps = {name: np.empty(images.shape, dtype=values.dtype) for name, values in known.items()}
    for name, values in known.items():
        maps[name][rows] = values[np.arange(len(rows)), ..., classes[rows]]
    others = np.setdiff1d(np.arange(len(images)), rows)
    if len(others):  # none when the lab's images are all the images
        for name, computed in class_maps(explainers, background, images[others], classes[others]).items():
            maps[name][others] = computed
    return maps


def images_outside(x_train: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Return the training images that are not in the background (the sample's indices are not kept)."""
    taken = {image.tobytes() for image in background}
    return x_train[np.array([image.tobytes() not in taken for image in x_train])]


def disjoint_backgrounds(pool: np.ndarray, size: int, count: int, rng) -> list[np.ndarray]:
    """Return count disjoint backgrounds of size images drawn from pool, each in pool order."""
    picks = rng.choice(len(pool), size=count * size, replace=False)
    return [pool[np.sort(part)] for part in picks.reshape(count, size)]


def relative_distance(values: np.ndarray, other: np.ndarray) -> float:
    """Return ||values - other|| / ||values||: 0 for equal attributions, 1 for a change as large as they are."""
    return float(np.linalg.norm(values - other) / np.linalg.norm(values))


def correlation(values: np.ndarray, other: np.ndarray) -> float:
    return float(np.corrcoef(values.ravel(), other.ravel())[0, 1])


def comparison(size: int, values: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    """Return a row of the convergence curve: per rule, how far apart the maps from two backgrounds of size are."""
    return {
        "background_size": size,
        **{f"relative_l2_{name}": relative_distance(values[name], other[name]) for name in values},
        **{f"correlation_{name}": correlation(values[name], other[name]) for name in values},
    }


def convergence_curve(explainers: dict[str, Explainer], pool: np.ndarray, images: np.ndarray, sizes: list[int],
                      rng) -> list[dict]:
    """Return, per size, the distance between each rule's maps from two disjoint backgrounds of that size."""
    rows = []
    for size in sizes:
        print(f"trust: convergence, two backgrounds of {size}")
        first, second = disjoint_backgrounds(pool, size, 2, rng)
        rows.append(comparison(size, explain_all(explainers, first, images), explain_all(explainers, second, images)))
    return rows


def slope(sizes: list[int], distances: list[float]) -> float:
    """Return the least-squares slope of log distance against log size: -0.5 for a mean of independent draws."""
    return float(np.polyfit(np.log(sizes), np.log(distances), 1)[0])


def reference_norms(logit: Explainer, images: np.ndarray, references: np.ndarray, multipliers: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """Return, per rule, the squared norm of each reference's own contribution to the maps, (references,).

    Against one reference the logit explainer's values are that reference's contributions to the
    logits, (images, pixels, logits); a rule's head multipliers (images, references, classes, logits)
    carry them to the classes (DeepLIFT's chain rule, exact), so one pass serves every rule.
    """
    norms = {name: np.empty(len(references)) for name in multipliers}
    for index in range(len(references)):
        logits = logit.shap_values(images, references[index : index + 1])
        logits = logits.reshape(len(images), -1, logits.shape[-1]).astype(np.float64)
        for name, rule in multipliers.items():
            norms[name][index] = np.sum(np.einsum("kpl,kcl->kpc", logits, rule[:, index]) ** 2)
    return norms


def concentration(norms: np.ndarray) -> dict:
    """Return how few references carry the maps: the shares of the largest 1 and 5 squared norms, and
    the effective number of references (sum w)^2 / sum w^2 (n for n equal ones, 1 for a single one)."""
    ordered = np.sort(norms)[::-1]
    total = ordered.sum()
    return {
        "top1_share": float(ordered[0] / total),
        f"top{TOP_REFERENCES}_share": float(ordered[:TOP_REFERENCES].sum() / total),
        "effective_references": float(total**2 / np.sum(ordered**2)),
    }


def diagnostics(explainers: dict[str, Explainer], images: np.ndarray, references: np.ndarray) -> dict:
    """Return, per rule, the concentration of the maps over references and the largest |head multiplier|."""
    multipliers = {name: explainer.head_multipliers(images, references) for name, explainer in explainers.items()}
    norms = reference_norms(explainers["logit"], images, references, multipliers)
    return {
        name: {**concentration(norms[name]), "max_abs_multiplier": float(np.abs(multipliers[name]).max())}
        for name in explainers
    }


def deletion_curves(model, image: np.ndarray, orders: np.ndarray, fill: np.ndarray, steps: int, target: int
                    ) -> np.ndarray:
    """Return the probability of target as pixels are replaced by fill in each order: (orders, steps + 1)."""
    counts = np.linspace(0, image.size, steps + 1).round().astype(int)
    batch = np.repeat(image.reshape(1, -1), len(orders) * len(counts), axis=0)
    for row, (order, count) in enumerate((o, c) for o in orders for c in counts):
        batch[row, order[:count]] = fill.ravel()[order[:count]]
    probabilities = model.predict(batch.reshape((-1,) + image.shape), verbose=0)[:, target]
    return probabilities.reshape(len(orders), len(counts))


def deletion_test(model, images: np.ndarray, maps: dict[str, np.ndarray], fill: np.ndarray, steps: int,
                  random_orders: int, rng) -> dict[str, np.ndarray]:
    """Return the deletion curves of every image, (images, steps + 1): in random order, and in each rule's
    order ("<rule>_order") and its reverse ("<rule>_reverse_order").

    maps: per rule, each image's map for its predicted class (images, *image shape); a rule orders the
    image's pixels by it, largest first. All rules share the random orders.
    """
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    curves = defaultdict(list)
    for index, (image, target) in enumerate(zip(images, predicted)):
        rankings = {name: np.argsort(-rule_maps[index].ravel(), kind="stable") for name, rule_maps in maps.items()}
        randoms = [rng.permutation(image.size) for _ in range(random_orders)]
        orders = np.stack(randoms + [order for ranking in rankings.values() for order in (ranking, ranking[::-1])])
        probabilities = deletion_curves(model, image, orders, fill, steps, target)
        curves["random_order"].append(probabilities[:random_orders].mean(axis=0))
        for offset, name in enumerate(rankings):
            curves[f"{name}_order"].append(probabilities[random_orders + 2 * offset])
            curves[f"{name}_reverse_order"].append(probabilities[random_orders + 2 * offset + 1])
    return {name: np.array(rows) for name, rows in curves.items()}


def area(curves: np.ndarray) -> np.ndarray:
    """Return the area under each curve over the removed fraction 0..1."""
    return np.trapezoid(curves, dx=1 / (curves.shape[-1] - 1), axis=-1)


def deletion_metrics(curves: dict[str, np.ndarray], rules) -> dict:
    """Return the mean areas under the deletion curves, and per rule the share of images its order beats random on."""
    areas = {name: area(rows) for name, rows in curves.items()}
    return {"auc_random_order": float(areas["random_order"].mean()), **{name: {
        "auc_shap_order": float(areas[f"{name}_order"].mean()),
        "auc_reverse_order": float(areas[f"{name}_reverse_order"].mean()),
        "faithful_share": float(np.mean(areas[f"{name}_order"] < areas["random_order"])),
    } for name in rules}}


def seeded(initializer, seed: int):
    """Return a copy of a Keras initializer that draws from seed (a model's own drew theirs when it was built)."""
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = seed
    return initializer.__class__.from_config(config)


def randomized_values(model, images: np.ndarray, background: np.ndarray, seed: int, chunk_size: int,
                      classes: np.ndarray) -> list[np.ndarray]:
    """Return the maps of classes after re-initialising the top 1, 2, ... layers with weights (Adebayo's cascade)."""
    randomized = keras.models.clone_model(model)
    randomized.set_weights(model.get_weights())
    values = []
    for layer in reversed([layer for layer in randomized.layers if layer.weights]):
        layer.kernel.assign(seeded(layer.kernel_initializer, seed + len(values))(layer.kernel.shape))
        layer.bias.assign(seeded(layer.bias_initializer, seed + len(values))(layer.bias.shape))
        print(f"trust: randomization, {layer.name} and the layers above it re-initialised")
        values.append(fast_values(randomized, background, images, chunk_size, classes))
    return values


def rank_correlation(maps: np.ndarray, other: np.ndarray) -> float:
    """Return the mean over images of the Spearman correlation of their two maps, (images, *image shape) each."""
    return float(np.mean([spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(maps, other)]))


def claims_test(explainers: dict[str, Explainer], images: np.ndarray, probabilities: np.ndarray, labels: np.ndarray,
                backgrounds: list[np.ndarray], pixels: np.ndarray) -> dict[str, list[dict]]:
    """Return, per rule, the lab's readings of images against each background (stages/readings.py's lab_claims)."""
    claims = defaultdict(list)
    for number, background in enumerate(backgrounds, 1):
        print(f"trust: the lab's readings, background {number} of {len(backgrounds)}")
        for name, values in explain_all(explainers, background, images).items():
            claims[name].append(lab_claims(values, probabilities, labels, pixels))
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


def hide_ticks(axes: np.ndarray) -> None:
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])


def randomization_figure(images: np.ndarray, trained: np.ndarray, randomized: list[np.ndarray], classes: np.ndarray):
    """Return a figure: per image, the image, its trained map of its class, then that map after each cascade step."""
    cascade = ["top layer random"] + [f"top {k} layers random" for k in range(2, len(randomized) + 1)]
    titles = ["image", "trained", *cascade]
    rows = min(FIGURE_IMAGES, len(images))
    figure, axes = plt.subplots(rows, len(titles), figsize=(2 * len(titles), 2 * rows), squeeze=False)
    for row in range(rows):
        maps = [values[row][..., 0] for values in [trained, *randomized]]
        axes[row, 0].imshow(images[row][..., 0], cmap="gray_r")
        axes[row, 0].set_ylabel(CLASS_NAMES[classes[row]])
        for axis, attribution in zip(axes[row, 1:], maps):
            limit = np.abs(attribution).max() or 1.0
            axis.imshow(attribution, cmap="bwr", vmin=-limit, vmax=limit)
    for column, title in enumerate(titles):
        axes[0, column].set_title(title, fontsize=9)
    hide_ticks(axes)
    figure.tight_layout()
    return figure


def most_moved(values: np.ndarray, other: np.ndarray, classes: np.ndarray, count: int) -> np.ndarray:
    """Return the indices, in order, of the count images whose maps of their class in classes differ most
    between values and other (images, 28, 28, 1, classes)."""
    distances = [relative_distance(v[..., c], o[..., c]) for v, o, c in zip(values, other, classes)]
    return np.sort(np.argsort(distances, kind="stable")[::-1][:count])


def backgrounds_figure(images: np.ndarray, first: dict[str, np.ndarray], second: dict[str, np.ndarray],
                       classes: np.ndarray, size: int):
    """Return a figure: the images on top, then per rule a pair of rows, their maps of their class in
    classes from background A and from background B, disjoint, with the relative L2 distance of the
    two beneath; one colour scale per rule."""
    columns = len(images)
    figure, axes = plt.subplots(1 + 2 * len(first), columns, figsize=(2 * columns + 1.5, 2 * (1 + 2 * len(first))),
                                squeeze=False, layout="constrained")
    for column in range(columns):
        axes[0, column].imshow(images[column][..., 0], cmap="gray_r")
        axes[0, column].set_title(CLASS_NAMES[classes[column]], fontsize=9)
    for pair, name in enumerate(first):
        maps = [[values[k][..., 0, classes[k]] for k in range(columns)] for values in (first[name], second[name])]
        limit = max(np.abs(attribution).max() for row in maps for attribution in row) or 1.0
        for offset, (letter, row) in enumerate(zip("AB", maps)):
            axes_row = axes[1 + 2 * pair + offset]
            for axis, attribution in zip(axes_row, row):
                shown = axis.imshow(attribution, cmap="bwr", vmin=-limit, vmax=limit)
            axes_row[0].set_ylabel(f"{name} rule\nbackground {letter}")
        for axis, a, b in zip(axes[2 + 2 * pair], *maps):
            axis.set_xlabel(f"relative L2 {relative_distance(a, b):.2f}", fontsize=8)
        figure.colorbar(shown, ax=axes[1 + 2 * pair : 3 + 2 * pair].ravel().tolist(), shrink=0.8)
    hide_ticks(axes)
    figure.suptitle(f"Maps of the predicted class from two disjoint backgrounds of {size}:\n"
                    f"the {columns} images whose maps move most under shap's rule")
    return figure


def save_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as temporary:
        lines = [",".join(rows[0])] + [",".join(f"{value:.6g}" for value in row.values()) for row in rows]
        temporary.write_text("\n".join(lines) + "\n")


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
    return params


def check_pool(params: dict, pool_size: int, compared: int) -> None:
    """Fail with one line unless the training images outside the background suffice for the disjoint
    backgrounds, and the convergence curve has two sizes to fit a slope to."""
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


def convergence_metrics(curve: list[dict], background_size: int, compared: int, images: int) -> dict:
    """Return, per rule, the distance between the maps from the pipeline's background and another, and the slope."""
    sizes = [row["background_size"] for row in curve]
    return {"images": images, "background_size": background_size, "compared_size": compared, **{name: {
        "relative_l2": curve[-1][f"relative_l2_{name}"], "correlation": curve[-1][f"correlation_{name}"],
        "slope": slope(sizes, [row[f"relative_l2_{name}"] for row in curve]),
    } for name in RULES}}


def print_summary(metrics: dict) -> None:
    """Print one line per rule: its convergence, deletion area and readings."""
    for name in RULES:
        convergence, readings = metrics["convergence"][name], metrics["readings"][name]
        held = ", ".join(f"{reading} {summary['held']}" for reading, summary in readings.items())
        print(f"trust: {name} rule: background distance {convergence['relative_l2']:.3f} (slope "
              f"{convergence['slope']:.2f}), deletion AUC {metrics['deletion'][name]['auc_shap_order']:.3f}, "
              f"readings held {held} of {metrics['readings']['backgrounds']}")


def completeness(explainers: dict[str, Explainer], values: dict[str, np.ndarray], images: np.ndarray,
                 background: np.ndarray) -> dict:
    """Return, per rule, the largest and mean additivity error over images and classes."""
    metrics = {}
    for name, explainer in explainers.items():
        errors = additivity_errors(values[name], explainer.predict(images), explainer.expected_value(background))
        metrics[name] = {"max_additivity_error": float(errors.max()), "mean_additivity_error": float(errors.mean())}
    return metrics


def randomization_check(model, images: np.ndarray, background: np.ndarray, maps: np.ndarray, params: dict,
                        classes: np.ndarray) -> tuple[dict, np.ndarray, list[np.ndarray]]:
    """Return the cascade's metrics, the lab's rule's maps of classes against the first
    randomization_background images of the background (maps if that is all of it), and those maps
    after each cascade step."""
    subset = background[: params["randomization_background"]]
    chunk_size = params["chunk_size"]
    trained = fast_values(model, subset, images, chunk_size, classes) if len(subset) < len(background) else maps
    randomized = randomized_values(model, images, subset, params["seed"], chunk_size, classes)
    correlations = {f"top{k}_layers": rank_correlation(trained, v) for k, v in enumerate(randomized, 1)}
    passed = bool(max(correlations.values()) < params["randomization_threshold"])
    return {"rank_correlation": correlations, "passed": passed}, trained, randomized


def lab_sleeves(t_shirt: np.ndarray, x_train: np.ndarray, y_train: np.ndarray, params: dict) -> np.ndarray:
    """Return the sleeve pixels of the lab's T-shirt image against the mean training Pullover, or fail if none."""
    pixels = sleeve_pixels(t_shirt, x_train[y_train == PULLOVER].mean(axis=0), params["sleeves_blank_below"],
                           params["sleeves_pullover_above"])
    if not pixels.any():
        raise PipelineError("trust.sleeves_blank_below and trust.sleeves_pullover_above select no pixel of the "
                            "T-shirt image; raise the first or lower the second in params.yaml")
    return pixels


def main(argv: list[str] | None = None) -> None:
    params = read_trust_params()
    (model_path, background_path, train_dir, test_dir, metrics_path, deletion_path, convergence_path,
     randomization_path, backgrounds_path) = parse_paths("trust", __doc__, [
        "model", "background", "train_dir", "test_dir", "metrics", "deletion_csv", "convergence_csv",
        "randomization_png", "backgrounds_png",
    ], argv)

    # Each explanation traces the engine's forward pass anew; TensorFlow warns from the sixth on.
    tf.get_logger().setLevel("ERROR")
    model = load_model(model_path)
    background = np.load(background_path)
    x_train, y_train = load_split(train_dir)
    x_test, y_test = load_split(test_dir)
    pool = images_outside(x_train, background)
    compared = min(len(background), len(pool))
    check_pool(params, len(pool), compared)
    per_class = params["images_per_class"]
    images = first_of_each_class(x_test, y_test, per_class)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    lab = np.arange(0, len(images), per_class)  # the lab's ten images, the first of each class
    lab_images = images[lab]
    pixels = lab_sleeves(lab_images[T_SHIRT], x_train, y_train, params)
    rng = np.random.default_rng(params["seed"])
    explainers = rule_explainers(model, params["chunk_size"])
    probabilities = model.predict(images, verbose=0)
    predicted = probabilities.argmax(axis=1)

    print(f"trust: the lab's {len(lab_images)} images against the background of {len(background)}, "
          f"rules {', '.join(RULES)}")
    values = explain_all(explainers, background, lab_images)
    print(f"trust: convergence, a disjoint background of {compared}")
    other = explain_all(explainers, disjoint_backgrounds(pool, compared, 1, rng)[0], lab_images)
    curve = convergence_curve(explainers, pool, lab_images, params["convergence_sizes"], rng)
    curve.append(comparison(compared, values, other))
    references = background[: params["diagnostics_size"]]
    print(f"trust: diagnostics, {len(references)} references one at a time")
    per_reference = diagnostics(explainers, lab_images, references)
    print(f"trust: deletion test, {len(images)} images")
    maps = predicted_maps(explainers, background, images, predicted, lab, values)
    deletion = deletion_test(model, images, maps, background.mean(axis=0), params["deletion_steps"],
                             params["random_orders"], rng)
    randomization, trained, randomized = randomization_check(model, images, background, maps["shap"], params,
                                                             predicted)
    backgrounds = disjoint_backgrounds(pool, params["readings_size"], params["readings_backgrounds"], rng)
    claims = claims_test(explainers, lab_images, probabilities[lab], labels[lab], backgrounds, pixels)

    metrics = {
        "images": len(images),
        "completeness": completeness(explainers, values, lab_images, background),
        "convergence": convergence_metrics(curve, len(background), compared, len(lab_images)),
        "diagnostics": {"references": len(references), **per_reference},
        "deletion": deletion_metrics(deletion, RULES),
        "randomization": randomization,
        "diagonal_share": {name: float(np.mean(largest_positive_mass(v) == labels[lab])) for name, v in values.items()},
        "readings": {
            "backgrounds": len(backgrounds), "size": params["readings_size"], "sleeve_pixels": int(pixels.sum()),
            **{name: claims_summary(rule_claims) for name, rule_claims in claims.items()},
        },
    }
    save_json(metrics_path, metrics)
    save_csv(deletion_path, [
        {"fraction_removed": fraction, **{name: curves[:, step].mean() for name, curves in deletion.items()}}
        for step, fraction in enumerate(np.linspace(0, 1, params["deletion_steps"] + 1))
    ])
    save_csv(convergence_path, sorted(curve, key=lambda row: row["background_size"]))
    save_figure(randomization_figure(lab_images, trained[lab], [v[lab] for v in randomized], predicted[lab]),
                randomization_path)
    shown = most_moved(values["shap"], other["shap"], predicted[lab], FIGURE_IMAGES)
    save_figure(backgrounds_figure(lab_images[shown], {name: v[shown] for name, v in values.items()},
                                   {name: v[shown] for name, v in other.items()}, predicted[lab][shown], compared),
                backgrounds_path)
    print_summary(metrics)


if __name__ == "__main__":
    run(main)
