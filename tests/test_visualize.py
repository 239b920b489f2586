"""visualize: the reference row, and the SHAP figure with the reference row as its column headers."""

import numpy as np
from conftest import run_stage
from PIL import Image


def test_writes_reference_row_and_combined_figure(explained):
    prepared = explained
    run_stage("visualize", "data/train", "data/explanations", "out/reference.png", "out/shap.png", cwd=prepared)
    reference = np.asarray(Image.open(prepared / "out/reference.png"))
    combined = np.asarray(Image.open(prepared / "out/shap.png"))
    # The combined figure starts with the reference row, pixel for pixel, and is as wide.
    assert combined.shape[1] == reference.shape[1]
    assert combined.shape[0] > 5 * reference.shape[0]
    np.testing.assert_array_equal(combined[: reference.shape[0]], reference)
    # The SHAP part is not blank: it holds red and blue attributions.
    body = combined[reference.shape[0]:, :, :3].astype(int)
    assert ((body[..., 0] - body[..., 2]) > 100).any() and ((body[..., 2] - body[..., 0]) > 100).any()


def test_same_explanations_give_the_same_png_bytes(explained):
    prepared = explained
    args = ("data/train", "data/explanations")
    run_stage("visualize", *args, "a/reference.png", "a/shap.png", cwd=prepared)
    run_stage("visualize", *args, "b/reference.png", "b/shap.png", cwd=prepared)
    assert (prepared / "a/shap.png").read_bytes() == (prepared / "b/shap.png").read_bytes()
