"""Measure how far the SHAP explanations can be trusted: completeness, convergence, deletion, randomization.

Explains the first few test images of each class with the fast engine against the pipeline's
background, then checks the explanations four ways:
- completeness: how far each image's values miss f(x) - E f(background), per class;
- convergence: how much they move with another background of the same size, disjoint from the
  first, and how that distance shrinks as the background grows;
- deletion (Petsiuk et al. 2018): replacing pixels with the background's mean in the order of their
  SHAP value for the predicted class should drop its probability faster than random or reverse order;
- model randomization (Adebayo et al. 2018): with the weights re-initialised layer by layer from
  the top, faithful explanations should stop resembling the trained model's.

Reads: the model's weights, the background, the train directory (for the disjoint backgrounds) and
the test directory.
Writes: metrics JSON, the deletion and convergence curves as CSV, and a PNG of the randomization check.
"""

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
from stages.readings import additivity_errors, largest_positive_mass  # noqa: E402
from stages.model import load_model  # noqa: E402

FIGURE_IMAGES = 4  # rows of the randomization figure: the first image of the first classes


def fast_values(model, background: np.ndarray, images: np.ndarray, chunk_size: int) -> np.ndarray:
    """Return the fast engine's values of images against background, (images, 28, 28, 1, classes)."""
    return Explainer(model, chunk_size=chunk_size).shap_values(images, background)


def images_outside(x_train: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Return the training images that are not in the background (the sample's indices are not kept)."""
    taken = {image.tobytes() for image in background}
    return x_train[np.array([image.tobytes() not in taken for image in x_train])]


def relative_distance(values: np.ndarray, other: np.ndarray) -> float:
    """Return ||values - other|| / ||values||: 0 for equal attributions, 1 for a change as large as they are."""
    return float(np.linalg.norm(values - other) / np.linalg.norm(values))


def correlation(values: np.ndarray, other: np.ndarray) -> float:
    return float(np.corrcoef(values.ravel(), other.ravel())[0, 1])


def comparison(size: int, values: np.ndarray, other: np.ndarray) -> dict:
    """Return a row of the convergence curve: how far apart the attributions from two backgrounds of size are."""
    return {
        "background_size": size, "relative_l2": relative_distance(values, other),
        "correlation": correlation(values, other),
    }


def convergence_curve(model, pool: np.ndarray, images: np.ndarray, sizes: list[int], rng, chunk_size: int) -> list[dict]:
    """Return, per size, the distance between the attributions from two disjoint backgrounds of that size."""
    rows = []
    for size in sizes:
        if 2 * size > len(pool):
            raise PipelineError(
                f"trust.convergence_sizes holds {size}, but only {len(pool)} training images are outside the "
                f"background, too few for two disjoint backgrounds of {size}; lower it in params.yaml"
            )
        print(f"trust: convergence, two backgrounds of {size}")
        picks = rng.choice(len(pool), size=2 * size, replace=False)
        first, second = (fast_values(model, pool[np.sort(p)], images, chunk_size) for p in (picks[:size], picks[size:]))
        rows.append(comparison(size, first, second))
    return rows


def deletion_curves(model, image: np.ndarray, orders: np.ndarray, fill: np.ndarray, steps: int, target: int) -> np.ndarray:
    """Return the probability of target as pixels are replaced by fill in each order: (orders, steps + 1)."""
    counts = np.linspace(0, image.size, steps + 1).round().astype(int)
    batch = np.repeat(image.reshape(1, -1), len(orders) * len(counts), axis=0)
    for row, (order, count) in enumerate((o, c) for o in orders for c in counts):
        batch[row, order[:count]] = fill.ravel()[order[:count]]
    probabilities = model.predict(batch.reshape((-1,) + image.shape), verbose=0)[:, target]
    return probabilities.reshape(len(orders), len(counts))


def deletion_test(model, images: np.ndarray, values: np.ndarray, fill: np.ndarray, steps: int, random_orders: int,
                  rng) -> dict[str, np.ndarray]:
    """Return the deletion curves of every image, (images, steps + 1), for SHAP, random and reverse order.

    Each image's pixels are ordered by their SHAP value for its predicted class, largest first.
    """
    predicted = model.predict(images, verbose=0).argmax(axis=1)
    curves = {"shap_order": [], "random_order": [], "reverse_order": []}
    for image, image_values, target in zip(images, values, predicted):
        ranking = np.argsort(-image_values[..., target].ravel(), kind="stable")
        randoms = [rng.permutation(image.size) for _ in range(random_orders)]
        orders = np.stack([ranking, ranking[::-1], *randoms])
        probabilities = deletion_curves(model, image, orders, fill, steps, target)
        curves["shap_order"].append(probabilities[0])
        curves["reverse_order"].append(probabilities[1])
        curves["random_order"].append(probabilities[2:].mean(axis=0))
    return {name: np.array(rows) for name, rows in curves.items()}


def area(curves: np.ndarray) -> np.ndarray:
    """Return the area under each curve over the removed fraction 0..1."""
    return np.trapezoid(curves, dx=1 / (curves.shape[-1] - 1), axis=-1)


def seeded(initializer, seed: int):
    """Return a copy of a Keras initializer that draws from seed (a model's own drew theirs when it was built)."""
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = seed
    return initializer.__class__.from_config(config)


def randomized_values(model, images: np.ndarray, background: np.ndarray, seed: int, chunk_size: int) -> list[np.ndarray]:
    """Return the attributions after re-initialising the top 1, 2, ... layers with weights (Adebayo's cascade)."""
    randomized = keras.models.clone_model(model)
    randomized.set_weights(model.get_weights())
    values = []
    for layer in reversed([layer for layer in randomized.layers if layer.weights]):
        layer.kernel.assign(seeded(layer.kernel_initializer, seed + len(values))(layer.kernel.shape))
        layer.bias.assign(seeded(layer.bias_initializer, seed + len(values))(layer.bias.shape))
        print(f"trust: randomization, {layer.name} and the layers above it re-initialised")
        values.append(fast_values(randomized, background, images, chunk_size))
    return values


def rank_correlation(values: np.ndarray, other: np.ndarray, classes: np.ndarray) -> float:
    """Return the mean over images of the Spearman correlation of the two maps for the image's class."""
    pairs = zip(values, other, classes)
    return float(np.mean([spearmanr(a[..., c].ravel(), b[..., c].ravel()).statistic for a, b, c in pairs]))


def randomization_figure(images: np.ndarray, trained: np.ndarray, randomized: list[np.ndarray], classes: np.ndarray):
    """Return a figure: per image, the image, its trained map, then its map after each cascade step."""
    titles = ["image", "trained", "top layer random"] + [f"top {k} layers random" for k in range(2, len(randomized) + 1)]
    rows = min(FIGURE_IMAGES, len(images))
    figure, axes = plt.subplots(rows, len(titles), figsize=(2 * len(titles), 2 * rows), squeeze=False)
    for row in range(rows):
        maps = [values[row][..., 0, classes[row]] for values in [trained, *randomized]]
        axes[row, 0].imshow(images[row][..., 0], cmap="gray_r")
        axes[row, 0].set_ylabel(CLASS_NAMES[classes[row]])
        for axis, attribution in zip(axes[row, 1:], maps):
            limit = np.abs(attribution).max() or 1.0
            axis.imshow(attribution, cmap="bwr", vmin=-limit, vmax=limit)
    for column, title in enumerate(titles):
        axes[0, column].set_title(title, fontsize=9)
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    return figure


def save_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as temporary:
        lines = [",".join(rows[0])] + [",".join(f"{value:.6g}" for value in row.values()) for row in rows]
        temporary.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    params = read_params("trust", {
        "seed": int, "images_per_class": int, "convergence_sizes": list, "deletion_steps": int,
        "random_orders": int, "randomization_background": int, "randomization_threshold": float, "chunk_size": int,
    })
    for key in ("images_per_class", "deletion_steps", "random_orders", "randomization_background", "chunk_size"):
        require_positive(f"trust.{key}", params[key])
    for size in params["convergence_sizes"]:
        require_positive("trust.convergence_sizes", check_type("trust.convergence_sizes", size, int))
    model_path, background_path, train_dir, test_dir, metrics_path, deletion_path, convergence_path, figure_path = (
        parse_paths("trust", __doc__, [
            "model", "background", "train_dir", "test_dir", "metrics", "deletion_csv", "convergence_csv",
            "randomization_png",
        ], argv)
    )

    # Each explanation traces the fast engine's forward pass anew; TensorFlow warns from the sixth on.
    tf.get_logger().setLevel("ERROR")
    model = load_model(model_path)
    background = np.load(background_path)
    x_train, _ = load_split(train_dir)
    x_test, y_test = load_split(test_dir)
    images = first_of_each_class(x_test, y_test, params["images_per_class"])
    labels = np.repeat(np.arange(len(CLASS_NAMES)), params["images_per_class"])
    rng = np.random.default_rng(params["seed"])
    chunk_size = params["chunk_size"]

    print(f"trust: {len(images)} images against the background of {len(background)}")
    values = fast_values(model, background, images, chunk_size)
    probabilities = model.predict(images, verbose=0)
    predicted = probabilities.argmax(axis=1)
    errors = additivity_errors(values, probabilities, Explainer(model, chunk_size=chunk_size).expected_value(background))

    pool = images_outside(x_train, background)
    size = min(len(background), len(pool))
    print(f"trust: convergence, a disjoint background of {size}")
    other = fast_values(model, pool[np.sort(rng.choice(len(pool), size=size, replace=False))], images, chunk_size)
    curve = convergence_curve(model, pool, images, params["convergence_sizes"], rng, chunk_size)
    curve.append(comparison(size, values, other))

    print("trust: deletion test")
    fill = background.mean(axis=0)
    deletion = deletion_test(model, images, values, fill, params["deletion_steps"], params["random_orders"], rng)
    areas = {name: area(curves) for name, curves in deletion.items()}

    subset = background[: params["randomization_background"]]
    trained = fast_values(model, subset, images, chunk_size) if len(subset) < len(background) else values
    randomized = randomized_values(model, images, subset, params["seed"], chunk_size)
    correlations = {f"top{k}_layers": rank_correlation(trained, v, predicted) for k, v in enumerate(randomized, 1)}

    metrics = {
        "images": len(images),
        "completeness": {"max_additivity_error": float(errors.max()), "mean_additivity_error": float(errors.mean())},
        "convergence": {"background_size": len(background), "compared_size": size, **{
            key: curve[-1][key] for key in ("relative_l2", "correlation")}},
        "deletion": {
            **{f"auc_{name}": float(a.mean()) for name, a in areas.items()},
            "faithful_share": float(np.mean(areas["shap_order"] < areas["random_order"])),
        },
        "randomization": {
            "rank_correlation": correlations,
            "passed": bool(max(correlations.values()) < params["randomization_threshold"]),
        },
        "diagonal_share": float(np.mean(largest_positive_mass(values) == labels)),
    }
    fractions = np.linspace(0, 1, params["deletion_steps"] + 1)
    first_of_class = slice(None, None, params["images_per_class"])
    save_json(metrics_path, metrics)
    save_csv(deletion_path, [
        {"fraction_removed": f, **{name: curves[:, step].mean() for name, curves in deletion.items()}}
        for step, f in enumerate(fractions)
    ])
    save_csv(convergence_path, sorted(curve, key=lambda row: row["background_size"]))
    figure = randomization_figure(
        images[first_of_class], trained[first_of_class], [v[first_of_class] for v in randomized],
        predicted[first_of_class],
    )
    save_figure(figure, figure_path)
    print(f"trust: deletion AUC {metrics['deletion']['auc_shap_order']:.3f} in SHAP order, "
          f"{metrics['deletion']['auc_random_order']:.3f} random; background distance "
          f"{metrics['convergence']['relative_l2']:.2f}; randomization {correlations}")


if __name__ == "__main__":
    run(main)
