"""figures: the lab's overlay, and PNGs whose bytes depend on what is drawn alone."""

import matplotlib.pyplot as plt
import numpy as np
from shap.plots.colors import red_transparent_blue

from fashion_shap.figures import OVERLAY_ALPHA, RED_TRANSPARENT_BLUE, draw_map, save_figure


def drawn(seed: int = 0):
    figure, axis = plt.subplots(figsize=(2, 2))
    rng = np.random.default_rng(seed)
    shown = draw_map(axis, rng.random((28, 28, 1)), rng.normal(size=(28, 28)), limit=2.0)
    return figure, axis, shown


def test_a_map_is_drawn_over_its_faint_inverted_image_on_a_symmetric_scale():
    figure, axis, shown = drawn()
    grey, colours = axis.get_images()
    assert grey.get_alpha() == OVERLAY_ALPHA and grey.get_cmap().name == "gray"
    assert colours is shown and shown.get_clim() == (-2.0, 2.0)
    plt.close(figure)


def test_saving_twice_gives_the_same_bytes_and_closes_the_figure(tmp_path):
    for name in ("a.png", "b.png"):
        figure, _, _ = drawn()
        save_figure(figure, tmp_path / name)
        assert not plt.fignum_exists(figure.number)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    figure, _, _ = drawn()
    save_figure(figure, tmp_path / "cropped.png", crop_pad=0.0)
    assert (tmp_path / "cropped.png").stat().st_size < (tmp_path / "a.png").stat().st_size


def test_the_maps_colours_are_shaps_own():
    # Every one of the 256 colours, alpha included: the figures stay shap.image_plot's, without importing shap.
    levels = np.linspace(0, 1, 256)
    assert np.array_equal(RED_TRANSPARENT_BLUE(levels), red_transparent_blue(levels))
    assert RED_TRANSPARENT_BLUE.N == red_transparent_blue.N
