"""mistakes.concentration: the mistakes, their pairs, and how concentrated their maps are, on known cases."""

import numpy as np
import pytest

from fashion_shap.mistakes.concentration import (
    find_mistakes,
    mistake_metrics,
    region_shares,
    top_pairs,
)


def test_find_mistakes_lists_wrong_predictions_with_true_then_predicted_class():
    indices, classes = find_mistakes(np.array([3, 1, 4, 1, 5]), np.array([3, 2, 4, 0, 5]))
    assert indices.tolist() == [1, 3]
    assert classes.tolist() == [[2, 1], [0, 1]]


def test_top_pairs_puts_the_most_frequent_first_and_ties_in_class_order():
    classes = np.array([[6, 0], [2, 4], [6, 0], [4, 2], [2, 4], [6, 0], [0, 6]])
    assert top_pairs(classes, 3) == [(6, 0), (2, 4), (0, 6)]
    assert top_pairs(classes, 10) == [(6, 0), (2, 4), (0, 6), (4, 2)]


def test_region_shares_of_maps_inside_spread_over_and_outside_the_pairs_region():
    inside = np.zeros((28, 28))
    inside[:3, :26] = 1.0  # 78 pixels, the region's size: a tenth of 784
    spread = np.ones((28, 28))
    outside = np.zeros((28, 28))
    outside[20:, :] = 1.0
    shares = region_shares(np.stack([inside, inside, inside, spread, outside, np.zeros((28, 28))]))
    np.testing.assert_allclose(shares, [1.0, 1.0, 1.0, 78 / 784, 0.0, 0.0])


def test_region_shares_ignore_negative_values():
    maps = np.zeros((2, 28, 28))
    maps[:, :3, :26] = 1.0
    maps[1, 20:, :] = -5.0  # evidence against the class, outside the region: not part of the mass
    np.testing.assert_allclose(region_shares(maps), [1.0, 1.0])


def test_metrics_count_every_pair_and_the_concentrated_mistakes_of_the_top_ones():
    classes = np.array([[6, 0], [6, 0], [6, 0], [2, 4]])
    maps = np.zeros((4, 28, 28, 2))
    maps[:2, :3, :26, 1] = 1.0  # two of the three Shirt -> T-shirt maps in the same region
    maps[2, 10:, :, 1] = 1.0  # the third spread over the lower two thirds
    metrics = mistake_metrics(classes, maps, top_pairs(classes, 1), test_size=40)
    assert metrics["mistakes"] == 4 and metrics["error_rate"] == 0.1
    assert metrics["pairs"] == {"Shirt -> T-shirt/top": 3, "Pullover -> Coat": 1}
    top = metrics["top_pairs"]["Shirt -> T-shirt/top"]
    assert top["mistakes"] == 3
    assert top["concentrated_share"] == pytest.approx(2 / 3, abs=1e-6)
