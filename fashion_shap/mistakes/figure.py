"""The mistakes' figure: a row per frequent confusion pair, examples with their maps and the pair's mean map."""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure, SubFigure
from scipy.ndimage import gaussian_filter

from fashion_shap.data import CLASS_NAMES
from fashion_shap.figures import draw_map

FIGURE_EXAMPLES = 3  # mistakes shown per pair, the first in test order
SCALE_PERCENTILE = 99  # of a row's |values|: its colour scale runs from -limit to +limit
MEAN_SMOOTHING = 1.0  # pixels, the sigma of the Gaussian that smooths the mean maps in the figure
CELL = 1.1  # inches per image
FONT_SIZE = 8  # points


def row_limit(maps: np.ndarray) -> float:
    """Return the colour limit of a row's maps: the SCALE_PERCENTILE of their |values|, or 1 if all are 0."""
    return float(np.percentile(np.abs(maps), SCALE_PERCENTILE)) or 1.0


def draw_pair(row: SubFigure, images: np.ndarray, maps: np.ndarray, indices: np.ndarray, pair: tuple[int, int]) -> None:
    """Draw one pair's row: examples (image, map for the true class, for the predicted one), then the mean map.

    images, maps (images, 28, 28, 2), indices: the pair's mistakes, in test order.
    """
    true, predicted = (CLASS_NAMES[c] for c in pair)
    row.suptitle(f"{true} taken for {predicted}: {len(images)} mistakes", fontsize=FONT_SIZE + 1, x=0.01, ha="left")
    axes = row.subplots(1, 3 * FIGURE_EXAMPLES + 1)
    for axis in axes:
        axis.axis("off")
    shown = slice(0, FIGURE_EXAMPLES)
    limit = row_limit(maps[shown])
    for slot, (image, image_maps, index) in enumerate(zip(images[shown], maps[shown], indices[shown])):
        image_axis, true_axis, predicted_axis = axes[3 * slot : 3 * slot + 3]
        image_axis.imshow(-image[..., 0], cmap="gray")
        image_axis.set_title(f"test image {index}", fontsize=FONT_SIZE)
        true_axis.set_title(f"for {true}", fontsize=FONT_SIZE)
        predicted_axis.set_title(f"for {predicted}", fontsize=FONT_SIZE)
        example = draw_map(true_axis, image, image_maps[..., 0], limit)
        draw_map(predicted_axis, image, image_maps[..., 1], limit)
    row.colorbar(example, ax=axes[:-1], shrink=0.8, pad=0.01, label="SHAP value")
    # Smoothed: single pixels of a map are noise of the background's draw (README, "How far to trust the figure").
    difference = gaussian_filter(maps[..., 1].mean(axis=0) - maps[..., 0].mean(axis=0), MEAN_SMOOTHING)
    axes[-1].set_title(f"mean {predicted}\nminus {true}", fontsize=FONT_SIZE)
    mean = draw_map(axes[-1], images.mean(axis=0), difference, row_limit(difference))
    row.colorbar(mean, ax=axes[-1], shrink=0.8, pad=0.04, label="SHAP value")


def pairs_figure(images: np.ndarray, classes: np.ndarray, maps: np.ndarray, indices: np.ndarray,
                 pairs: list[tuple[int, int]]) -> Figure:
    """Return a figure with a row per pair (draw_pair), or a line saying there are no mistakes."""
    columns = 3 * FIGURE_EXAMPLES + 1
    figure = plt.figure(figsize=(columns * CELL + 1.5, max(len(pairs), 1) * (CELL + 0.6) + 0.4), layout="constrained")
    if not pairs:
        figure.text(0.5, 0.5, "no mistakes", ha="center")
        return figure
    figure.suptitle("The most frequent mistakes: examples with their SHAP maps for the true and the predicted class "
                    "(red pushes towards the class), and the mean map of predicted minus true over the pair's images, "
                    f"smoothed over {MEAN_SMOOTHING:g} pixel", fontsize=FONT_SIZE + 1, wrap=True)
    for row, pair in zip(np.atleast_1d(figure.subfigures(len(pairs), 1)), pairs):
        members = np.flatnonzero((classes[:, 0] == pair[0]) & (classes[:, 1] == pair[1]))
        draw_pair(row, images[members], maps[members], indices[members], pair)
    return figure
