"""trust.rules: each rule's maps of one class per image, taken from known values where they exist."""

import numpy as np
import pytest
from trust_models import random_images, small_model

from fashion_shap.trust.rules import explain_all, predicted_maps, rule_explainers, rule_maps


@pytest.mark.parametrize("rows", [[0, 2], [0, 1, 2, 3]])
def test_predicted_maps_take_known_rows_and_explain_the_others(rows):
    model, images, background = small_model(), random_images(4, 0), random_images(6, 1)
    explainers, classes = rule_explainers(model, chunk_size=4), np.array([3, 1, 4, 1])
    known = explain_all(explainers, background, images[rows])
    maps = predicted_maps(explainers, background, images, classes, np.array(rows), known)
    for name, expected in rule_maps(explainers, background, images, classes).items():
        np.testing.assert_allclose(maps[name], expected, rtol=1e-5, atol=1e-8)


def test_explain_all_in_one_pass_equals_each_explainer_alone():
    model, images, background = small_model(), random_images(2, 0), random_images(5, 1)
    explainers = rule_explainers(model, chunk_size=3)
    for name, values in explain_all(explainers, background, images).items():
        expected = explainers[name].shap_values(images, background)
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
