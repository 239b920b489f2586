"""The lab's figures: shap.image_plot's colours and overlay, and saving a figure byte-reproducibly."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from fashion_shap.files import atomic_path

# shap.image_plot's choices (shap/plots/_image.py), kept so every map reads as the lab's.
OVERLAY_ALPHA = 0.15  # the grey image under each map
OVERLAY_EXTENT = 1  # image_plot stretches the grey image to (-1, width, height, -1), one pixel wider
# shap.plots.colors.red_transparent_blue, made as shap makes it: shap's blue fading out, then its red fading in.
# Not imported: `import shap` loads scikit-learn, pandas and more (measured: the visualize stage 4.6-5.9 s with it,
# 2.3-2.7 s without).
BLUE, RED = (30 / 255, 136 / 255, 229 / 255), (255 / 255, 13 / 255, 87 / 255)
RED_TRANSPARENT_BLUE = LinearSegmentedColormap.from_list(
    "red_transparent_blue", [BLUE + (alpha,) for alpha in np.linspace(1, 0, 100)]
    + [RED + (alpha,) for alpha in np.linspace(0, 1, 100)])


def draw_map(axis: Axes, image: np.ndarray, values: np.ndarray, limit: float) -> AxesImage:
    """Draw a SHAP map over its inverted grey image, as shap.image_plot does; return the map.

    image: (rows, columns, 1) in [0, 1]; values: (rows, columns); the colours run from -limit (blue)
    to +limit (red), white at 0.
    """
    height, width = values.shape
    axis.imshow(-image[..., 0], cmap="gray", alpha=OVERLAY_ALPHA,
                extent=(-OVERLAY_EXTENT, width, height, -OVERLAY_EXTENT))
    return axis.imshow(values, cmap=RED_TRANSPARENT_BLUE, vmin=-limit, vmax=limit)


def save_figure(figure: Figure, path: Path, crop_pad: float | None = None) -> None:
    """Save figure as PNG, without metadata that could vary between runs, and close it.

    crop_pad: None keeps the figure's size; else inches of white kept around what is drawn.
    """
    crop = {} if crop_pad is None else {"bbox_inches": "tight", "pad_inches": crop_pad}
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", metadata={"Software": None}, **crop)
    plt.close(figure)
