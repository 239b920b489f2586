"""trust.convergence: distances between maps from disjoint backgrounds, and the slope of their curve."""

import numpy as np
import pytest
from trust_models import random_images, small_model

from fashion_shap.trust.convergence import correlation, disjoint_backgrounds, images_outside, relative_distance, slope
from fashion_shap.trust.rules import RULES, explain_all, rule_explainers


def test_identical_backgrounds_give_distance_zero_and_disjoint_ones_do_not():
    model, images, background = small_model(), random_images(3, 0), random_images(20, 1)
    explainers = rule_explainers(model, chunk_size=4)
    first = explain_all(explainers, background[:10], images)
    same = explain_all(explainers, background[:10].copy(), images)
    other = explain_all(explainers, background[10:], images)
    for name in RULES:
        assert relative_distance(first[name], same[name]) == 0.0
        assert correlation(first[name], same[name]) == pytest.approx(1.0, abs=1e-12)
        assert relative_distance(first[name], other[name]) > 0.01
        assert correlation(first[name], other[name]) < 1.0 - 1e-6


def test_slope_of_distances_that_halve_when_the_background_quadruples_is_minus_half():
    sizes = [100, 400, 1600]
    assert slope(sizes, [0.4 / np.sqrt(size) for size in sizes]) == pytest.approx(-0.5)
    assert slope(sizes, [0.3, 0.3, 0.3]) == pytest.approx(0.0, abs=1e-12)  # maps that do not settle


def test_images_outside_leaves_out_the_background():
    images = np.arange(5 * 4, dtype=np.float32).reshape(5, 2, 2, 1)
    np.testing.assert_array_equal(images_outside(images, images[[3, 1]]), images[[0, 2, 4]])


def test_disjoint_backgrounds_share_no_image():
    pool = np.arange(30, dtype=np.float32).reshape(30, 1, 1, 1)
    backgrounds = disjoint_backgrounds(pool, 6, 4, np.random.default_rng(0))
    drawn = np.concatenate([b.ravel() for b in backgrounds])
    assert [len(b) for b in backgrounds] == [6] * 4 and len(set(drawn.tolist())) == 24
