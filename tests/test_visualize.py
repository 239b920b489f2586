"""visualize: the reference row, and the SHAP grid beneath it drawn as shap.image_plot draws it, laid out tight."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import shap
from conftest import run_stage
from PIL import Image

from fashion_shap.data import CLASS_NAMES, NUM_CLASSES
from stages.visualize import CELL, DPI, main, shap_figure

# Labels and predictions that give the longest row labels the real data can have.
LABELS = np.array([0, 4, 9])
PREDICTED = np.array([0, 2, 9])
ROW_LABELS = ["T-shirt/top -> T-shirt/top", "Coat -> Pullover", "Ankle boot -> Ankle boot"]
MARGIN = 8  # pixels: the most white the figure may keep at its edges
MAX_BAND = int(CELL * DPI) // 5  # pixels: the tallest (or widest) blank band inside, a fifth of an image


def synthetic_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    """Return the stage's inputs: noise images (which fill their cells, so blank bands are layout), random values."""
    rng = np.random.default_rng(seed)
    probabilities = rng.random((len(LABELS), NUM_CLASSES)) / 2
    probabilities[np.arange(len(LABELS)), PREDICTED] = 1
    return {
        "x": rng.random((2 * NUM_CLASSES, 28, 28, 1), dtype=np.float32),
        "y": np.arange(2 * NUM_CLASSES) % NUM_CLASSES,
        "images": rng.random((len(LABELS), 28, 28, 1), dtype=np.float32),
        "labels": LABELS,
        "probabilities": probabilities.astype(np.float32),
        "shap_values": (rng.normal(size=(len(LABELS), 28, 28, 1, NUM_CLASSES)) / 100).astype(np.float32),
    }


def write_inputs(directory, inputs):
    for name, subdirectory in (("x", "train"), ("y", "train"), ("images", "explanations"), ("labels", "explanations"),
                               ("probabilities", "explanations"), ("shap_values", "explanations")):
        (directory / subdirectory).mkdir(exist_ok=True)
        np.save(directory / subdirectory / f"{name}.npy", inputs[name])


def draw(directory, out):
    """Run the stage in-process in directory on its train/ and explanations/; return the two PNGs' paths."""
    main(["train", "explanations", f"{out}/reference.png", f"{out}/shap.png"])
    return directory / out / "reference.png", directory / out / "shap.png"


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """A directory holding the synthetic inputs, where the stage drew out/reference.png and out/shap.png."""
    directory = tmp_path_factory.mktemp("visualize")
    write_inputs(directory, synthetic_inputs())
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(directory)
        draw(directory, "out")
    return directory


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def has_red_and_blue(pixels: np.ndarray) -> bool:
    red, blue = pixels[..., 0], pixels[..., 2]
    return bool(((red - blue) > 100).any() and ((blue - red) > 100).any())


def blank_runs(blank: np.ndarray) -> list[tuple[int, int]]:
    """Return (start, length) of each run of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], blank.astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def assert_tight(pixels: np.ndarray):
    """Fail on a white margin wider than MARGIN, or a white band inside wider than MAX_BAND."""
    white = (pixels == 255).all(axis=-1)
    for blank, size in ((white.all(axis=1), white.shape[0]), (white.all(axis=0), white.shape[1])):
        for start, length in blank_runs(blank):
            at_edge = start == 0 or start + length == size
            assert length <= (MARGIN if at_edge else MAX_BAND), (start, length)


def test_writes_the_reference_row_and_the_shap_figure(drawn):
    reference = rgb(drawn / "out/reference.png")
    combined = rgb(drawn / "out/shap.png")
    # The reference row alone: one row of grey images, no attributions.
    assert reference.shape[0] < 2 * CELL * DPI
    assert (reference == reference[..., :1]).all()
    # The SHAP figure: the reference row above one row per explained image, in red and blue.
    assert combined.shape[0] > (len(LABELS) + 1) * CELL * DPI
    assert has_red_and_blue(combined)
    assert sorted(path.name for path in (drawn / "out").iterdir()) == ["reference.png", "shap.png"]


def test_same_inputs_give_the_same_png_bytes(drawn, monkeypatch):
    monkeypatch.chdir(drawn)
    for first, second in zip(draw(drawn, "again"), (drawn / "out/reference.png", drawn / "out/shap.png")):
        assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("name", ["reference.png", "shap.png"])
def test_figure_has_no_blank_band_or_wide_margin(drawn, name):
    # Inside shap.png this covers the reference row sitting directly above the grid.
    assert_tight(rgb(drawn / "out" / name))


@pytest.fixture(scope="module")
def figure():
    """The SHAP figure of the synthetic inputs, drawn by matplotlib's renderer (pixel units), closed afterwards."""
    inputs = synthetic_inputs()
    references = inputs["x"][:NUM_CLASSES]
    drawn_figure = shap_figure(references, inputs["shap_values"], inputs["images"], inputs["labels"],
                               inputs["probabilities"])
    drawn_figure.canvas.draw()
    yield drawn_figure
    plt.close(drawn_figure)


def test_nothing_overlaps_an_image_or_a_text(figure):
    image_boxes = [axis.get_window_extent() for axis in figure.axes if axis.images]
    titles = [axis.title for axis in figure.axes if axis.get_title()]
    row_labels = [text for axis in figure.axes for text in axis.texts]
    (colorbar,) = [axis for axis in figure.axes if axis.axison]  # the only axes that shows its axis
    assert [title.get_text() for title in titles] == CLASS_NAMES
    assert [label.get_text() for label in row_labels] == ["reference", *ROW_LABELS]
    assert colorbar.get_xlabel() == "SHAP value"
    text_boxes = [text.get_window_extent() for text in titles + row_labels] + [colorbar.get_tightbbox()]
    for index, box in enumerate(image_boxes):
        assert not any(box.overlaps(other) for other in image_boxes[index + 1:]), box
    for index, box in enumerate(text_boxes):
        assert not any(box.overlaps(image) for image in image_boxes), box
        assert not any(box.overlaps(other) for other in text_boxes[index + 1:]), box


def test_each_row_label_sits_left_of_its_first_image(figure):
    first_column = [axis for axis in figure.axes if axis.texts]
    for axis in first_column:
        label, cell = axis.texts[0].get_window_extent(), axis.get_window_extent()
        assert label.x1 < cell.x0 and cell.y0 < (label.y0 + label.y1) / 2 < cell.y1


def drawn_images(axis) -> list[tuple]:
    """Return what an axes shows: each image's data, colormap, colour limits, alpha and extent."""
    return [(image.get_array().tolist(), image.get_cmap().name, image.get_clim(), image.get_alpha(),
             tuple(image.get_extent())) for image in axis.images]


def test_grid_draws_what_shap_image_plot_draws(figure):
    inputs = synthetic_inputs()
    values = inputs["shap_values"]
    shap.image_plot([values[..., c] for c in range(NUM_CLASSES)], -inputs["images"], show=False)
    theirs = plt.gcf()
    try:
        # Both figures hold their grid's axes row by row, then the colour bar; ours has the reference row first.
        ours = figure.axes[NUM_CLASSES + 1:]
        assert len(ours) == len(theirs.axes)
        for our_axis, their_axis in zip(ours[:-1], theirs.axes[:-1]):
            assert drawn_images(our_axis) == drawn_images(their_axis)
        assert ours[-1].get_xlabel() == theirs.axes[-1].get_xlabel()
    finally:
        plt.close(theirs)


@pytest.mark.slow
def test_command_line_draws_the_pipeline_explanations(explained):
    run_stage("visualize", "data/train", "data/explanations", "cli/reference.png", "cli/shap.png", cwd=explained)
    assert (explained / "cli/reference.png").is_file()
    assert has_red_and_blue(rgb(explained / "cli/shap.png"))
