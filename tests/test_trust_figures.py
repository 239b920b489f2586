"""trust.figures: which images the backgrounds figure shows."""

import numpy as np

from fashion_shap.trust.figures import most_moved


def test_most_moved_picks_the_images_whose_maps_of_their_class_differ_most():
    values = np.ones((5, 2, 2, 1, 3))
    other = values.copy()
    other[[1, 3, 4], 0, 0, 0, [2, 0, 1]] = [3.0, 2.0, 1.5]  # each image's own class moves by 2, 1 and 0.5
    other[0, 0, 0, 0, 1] = 9.0  # not image 0's class
    assert most_moved(values, other, np.array([0, 2, 1, 0, 1]), 2).tolist() == [1, 3]
