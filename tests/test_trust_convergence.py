"""trust.convergence: distances between maps from disjoint backgrounds, and the slope of their curve."""

import numpy as np
import pytest
from trust_models import random_images, small_model

from fashion_shap.trust.convergence import (
    convergence_ranges,
    correlation,
    disjoint_draw,
    explain_ranges,
    images_outside,
    relative_distance,
    slope,
)
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


def test_a_draw_holds_as_many_images_as_the_ranges_reach_each_once():
    pool = np.arange(30, dtype=np.float32).reshape(30, 1, 1, 1)
    ranges = convergence_ranges([2, 6], compared=8)
    assert ranges == {"compared": (0, 8), "first 2": (0, 2), "first 6": (0, 6), "second 2": (6, 8), "second 6": (6, 12)}
    draw = disjoint_draw(pool, ranges, np.random.default_rng(0))
    assert len(draw) == 12 and len(set(draw.ravel().tolist())) == 12
    first, second = set(draw[0:6].ravel().tolist()), set(draw[6:12].ravel().tolist())
    assert not first & second  # each size's two backgrounds are disjoint


def test_each_range_has_the_values_of_its_own_background_explained_alone(capsys):
    model, images, draw = small_model(), random_images(2, 0), random_images(12, 1)
    explainers = rule_explainers(model, chunk_size=4)
    ranges = {"all": (0, 12), "head": (0, 5), "tail": (5, 12), "middle": (3, 9)}
    ranged = explain_ranges(explainers, draw, images, ranges)
    for key, (start, stop) in ranges.items():
        alone = explain_all(explainers, draw[start:stop], images)
        for name in RULES:
            assert ranged[key][name].shape == alone[name].shape
            np.testing.assert_allclose(ranged[key][name], alone[name], rtol=0, atol=1e-6 * np.abs(alone[name]).max())
    # The pieces between the ranges' ends, each explained once: 0-3, 3-5, 5-9, 9-12.
    assert capsys.readouterr().out.count("trust: disjoint backgrounds, references") == 4
