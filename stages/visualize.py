"""Draw the lab's figures: the reference row, and the SHAP values of the explained images beneath it.

Reads: the train directory (for the reference row) and the explanations directory.
Writes: the reference row as PNG, and one PNG with the reference row as column headers above a
grid of SHAP maps (one row per explained image, one column per class) and the colour bar below.

The grid is drawn here rather than by shap.image_plot, whose separate figure left blank bands and
drew row titles over the images, but with image_plot's colours, grey overlay and colour scale.
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from fashion_shap.data import CLASS_NAMES, first_of_each_class, load_split
from fashion_shap.figures import draw_map, save_figure
from fashion_shap.params import parse_paths, run

# The layout, in inches at DPI dots per inch: square images GAP apart, room above for the class
# names and below for the colour bar. Row labels go left of the first column; saving crops the
# figure to what is drawn, so LABEL_SPACE only has to be wide enough.
DPI = 100
CELL = 0.8
GAP = 0.04
TITLE_SPACE = 0.3
LABEL_SPACE = 2.5
COLORBAR_TOP = 0.12  # below the last row of images
COLORBAR_HEIGHT = 0.12
COLORBAR_SPACE = 0.7  # the bar, its tick labels and its label
FONT_SIZE = 10  # points
PAD = 0.03  # inches of white kept around the cropped figure

# shap.image_plot's colour scale (shap/plots/_image.py), kept so the maps read as the lab's.
SCALE_PERCENTILE = 99.9  # of |SHAP values| over the whole grid: the colour scale runs from -limit to +limit


def image_grid(rows: int, columns: int, bottom_space: float) -> tuple[Figure, np.ndarray]:
    """Return a figure and its (rows, columns) array of square image axes, bottom_space inches above its foot."""
    width = LABEL_SPACE + columns * CELL + (columns - 1) * GAP
    height = TITLE_SPACE + rows * CELL + (rows - 1) * GAP + bottom_space
    figure = plt.figure(figsize=(width, height), dpi=DPI)
    axes = np.empty((rows, columns), dtype=object)
    for row in range(rows):
        for column in range(columns):
            left = LABEL_SPACE + column * (CELL + GAP)
            bottom = height - TITLE_SPACE - (row + 1) * CELL - row * GAP
            axes[row, column] = figure.add_axes((left / width, bottom / height, CELL / width, CELL / height))
            axes[row, column].axis("off")
    return figure, axes


def label_row(axis: Axes, text: str) -> None:
    """Write a row's label left of its first image, vertically centred on it."""
    axis.annotate(text, xy=(0, 0.5), xycoords="axes fraction", xytext=(-6, 0), textcoords="offset points",
                  ha="right", va="center", fontsize=FONT_SIZE)


def draw_reference_row(axes: np.ndarray, references: np.ndarray) -> None:
    """Fill a row of axes with each class's image, under the class name.

    references: (classes, 28, 28, 1) in [0, 1], drawn inverted (dark garments on white), as in the lab.
    """
    for axis, image, name in zip(axes, references, CLASS_NAMES):
        axis.imshow(-image[..., 0], cmap="gray")
        axis.set_title(name, fontsize=FONT_SIZE)


def color_limit(values: np.ndarray) -> float:
    """Return shap.image_plot's colour limit for values (images, height, width, channels, classes)."""
    return float(np.nanpercentile(np.abs(values.sum(axis=-2)), SCALE_PERCENTILE))


def draw_explanations(axes: np.ndarray, values: np.ndarray, images: np.ndarray, row_labels: list[str]) -> AxesImage:
    """Fill rows of axes as shap.image_plot does: each image, then its SHAP map for each class.

    values: (images, 28, 28, 1, classes); images: (images, 28, 28, 1) in [0, 1], drawn inverted.
    Return the last map, whose colour scale the whole grid shares.
    """
    limit = color_limit(values)
    for row_axes, image_values, image, row_label in zip(axes, values, images, row_labels):
        row_axes[0].imshow(-image[..., 0], cmap="gray")
        label_row(row_axes[0], row_label)
        for axis, class_values in zip(row_axes[1:], np.moveaxis(image_values.sum(axis=-2), -1, 0)):
            shap_map = draw_map(axis, image, class_values, limit)
    return shap_map


def add_colorbar(figure: Figure, shap_map: AxesImage, under: np.ndarray) -> None:
    """Draw shap.image_plot's horizontal colour bar, labelled "SHAP value", just below the axes under."""
    left = under[0].get_position().x0
    right = under[-1].get_position().x1
    top = under[0].get_position().y0 - COLORBAR_TOP / figure.get_figheight()
    height = COLORBAR_HEIGHT / figure.get_figheight()
    colorbar = figure.colorbar(shap_map, cax=figure.add_axes((left, top - height, right - left, height)),
                               orientation="horizontal")
    colorbar.set_label("SHAP value", fontsize=FONT_SIZE)
    colorbar.outline.set_visible(False)


def reference_figure(references: np.ndarray) -> Figure:
    """Return the reference row alone: the first image of each class, under its name."""
    figure, axes = image_grid(1, len(references), bottom_space=0)
    label_row(axes[0, 0], "reference")
    draw_reference_row(axes[0], references)
    return figure


def shap_figure(references: np.ndarray, values: np.ndarray, images: np.ndarray, labels: np.ndarray,
                probabilities: np.ndarray) -> Figure:
    """Return the reference row above one row per explained image ("class -> predicted class"), and the colour bar."""
    predicted = probabilities.argmax(axis=1)
    row_labels = [f"{CLASS_NAMES[label]} -> {CLASS_NAMES[guess]}" for label, guess in zip(labels, predicted)]
    figure, axes = image_grid(len(images) + 1, values.shape[-1] + 1, bottom_space=COLORBAR_SPACE)
    # The reference row's first cell stays blank: the explained images fill that column below it.
    label_row(axes[0, 0], "reference")
    draw_reference_row(axes[0, 1:], references)
    shap_map = draw_explanations(axes[1:], values, images, row_labels)
    add_colorbar(figure, shap_map, under=axes[-1, 1:])
    return figure


def main(argv: list[str] | None = None) -> None:
    train_dir, explanations_dir, reference_path, shap_path = parse_paths(
        "visualize", __doc__, ["train_dir", "explanations_dir", "reference_png", "shap_png"], argv
    )

    x_train, y_train = load_split(train_dir)
    explanations = {
        name: np.load(explanations_dir / f"{name}.npy")
        for name in ("images", "labels", "probabilities", "shap_values")
    }

    references = first_of_each_class(x_train, y_train)
    save_figure(reference_figure(references), reference_path, crop_pad=PAD)
    save_figure(shap_figure(references, explanations["shap_values"], explanations["images"], explanations["labels"],
                            explanations["probabilities"]), shap_path, crop_pad=PAD)
    print(f"visualize: {reference_path}, {shap_path}")


if __name__ == "__main__":
    run(main)
