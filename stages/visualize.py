"""Draw the lab's figures: the reference row and the SHAP image plot beneath it.

Reads: the train directory (for the reference row) and the explanations directory.
Writes: the reference row as PNG, and one combined PNG with the reference row as column headers
above shap.image_plot of the explained images.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import shap  # noqa: E402
from PIL import Image  # noqa: E402

from stages.common import CLASS_NAMES, atomic_path, first_of_each_class, load_split, parse_paths, run  # noqa: E402

FIGURE_WIDTH = 20  # inches; shap.image_plot's default width, so the two parts line up column for column
DPI = 100
# shap.image_plot's rows are this many inches high at FIGURE_WIDTH with 10 images; the reference
# row uses the same image height so its panels match the columns below.
REFERENCE_IMAGE_HEIGHT = 1.09
REFERENCE_ROW_HEIGHT = 1.8


def reference_row(references: np.ndarray):
    """Return a figure: a blank "reference" panel, then each class's reference image titled with its name."""
    figure, axes = plt.subplots(1, len(references) + 1, figsize=(FIGURE_WIDTH, REFERENCE_ROW_HEIGHT), dpi=DPI)
    bottom = 0.05
    figure.subplots_adjust(bottom=bottom, top=bottom + REFERENCE_IMAGE_HEIGHT / REFERENCE_ROW_HEIGHT)
    axes[0].set_title("reference")
    for axis, image, name in zip(axes[1:], references, CLASS_NAMES):
        axis.imshow(-image[..., 0], cmap="gray")
        axis.set_title(name)
    for axis in axes:
        axis.axis("off")
    return figure


def shap_plot(values: np.ndarray, images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray):
    """Return shap.image_plot's figure of values (images, 28, 28, 1, classes), on inverted images as in the lab."""
    predicted = probabilities.argmax(axis=1)
    # One line per title: shap draws it above the image, and a second line would overlap the row above.
    row_titles = [f"{CLASS_NAMES[label]} -> {CLASS_NAMES[p]}" for label, p in zip(labels, predicted)]
    per_class = [values[..., c] for c in range(values.shape[-1])]  # image_plot wants one array per class
    shap.image_plot(per_class, -images, true_labels=row_titles, width=FIGURE_WIDTH, show=False)
    figure = plt.gcf()
    figure.set_dpi(DPI)
    return figure


def pixels(figure) -> np.ndarray:
    """Return the figure rendered as an (height, width, 4) uint8 RGBA array, and close it."""
    figure.canvas.draw()
    array = np.asarray(figure.canvas.buffer_rgba()).copy()
    plt.close(figure)
    return array


def save_png(path: Path, array: np.ndarray) -> None:
    # PIL writes no timestamp, so the same pixels always give the same bytes.
    with atomic_path(path) as temporary:
        Image.fromarray(array).save(temporary, format="png")


def main(argv: list[str] | None = None) -> None:
    train_dir, explanations_dir, reference_path, shap_path = parse_paths(
        "visualize", __doc__, ["train_dir", "explanations_dir", "reference_png", "shap_png"], argv
    )

    x_train, y_train = load_split(train_dir)
    explanations = {
        name: np.load(explanations_dir / f"{name}.npy")
        for name in ("images", "labels", "probabilities", "shap_values")
    }

    header = pixels(reference_row(first_of_each_class(x_train, y_train)))
    body = pixels(shap_plot(explanations["shap_values"], explanations["images"], explanations["labels"], explanations["probabilities"]))
    save_png(reference_path, header)
    save_png(shap_path, np.concatenate([header, body]))
    print(f"visualize: {reference_path} {header.shape[1]}x{header.shape[0]}, {shap_path}")


if __name__ == "__main__":
    run(main)
