"""The trust stage's figures: the randomization cascade, and maps from two disjoint backgrounds."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from fashion_shap.data import CLASS_NAMES
from fashion_shap.figures import draw_map
from fashion_shap.trust.convergence import relative_distance

FIGURE_IMAGES = 4  # images in each figure


def hide_ticks(axes: np.ndarray) -> None:
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])


def randomization_figure(images: np.ndarray, trained: np.ndarray, randomized: list[np.ndarray], classes: np.ndarray
                         ) -> Figure:
    """Return a figure: per image, the image, its trained map of its class, then that map after each cascade step,
    in the lab's colours (red towards the class, blue away), each map on its own scale."""
    cascade = ["top layer random"] + [f"top {k} layers random" for k in range(2, len(randomized) + 1)]
    titles = ["image", "trained", *cascade]
    rows = min(FIGURE_IMAGES, len(images))
    figure, axes = plt.subplots(rows, len(titles), figsize=(2 * len(titles), 2 * rows), squeeze=False)
    for row in range(rows):
        maps = [values[row][..., 0] for values in [trained, *randomized]]
        axes[row, 0].imshow(images[row][..., 0], cmap="gray_r")
        axes[row, 0].set_ylabel(CLASS_NAMES[classes[row]])
        for axis, attribution in zip(axes[row, 1:], maps):
            draw_map(axis, images[row], attribution, np.abs(attribution).max() or 1.0)
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
                       classes: np.ndarray, size: int) -> Figure:
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
            for axis, image, attribution in zip(axes_row, images, row):
                shown = draw_map(axis, image, attribution, limit)
            axes_row[0].set_ylabel(f"{name} rule\nbackground {letter}")
        for axis, a, b in zip(axes[2 + 2 * pair], *maps):
            axis.set_xlabel(f"relative L2 {relative_distance(a, b):.2f}", fontsize=8)
        figure.colorbar(shown, ax=axes[1 + 2 * pair : 3 + 2 * pair].ravel().tolist(), shrink=0.8)
    hide_ticks(axes)
    figure.suptitle(f"Maps of the predicted class from two disjoint backgrounds of {size}:\n"
                    f"the {columns} images whose maps move most under shap's rule")
    return figure
