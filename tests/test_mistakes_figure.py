"""mistakes.figure: a row per pair, titled with its classes."""

import numpy as np

from fashion_shap.mistakes.concentration import top_pairs
from fashion_shap.mistakes.figure import pairs_figure


def test_figure_titles_each_pair_and_its_classes():
    rng = np.random.default_rng(0)
    classes = np.array([[6, 0], [6, 0], [4, 2]])
    figure = pairs_figure(rng.random((3, 28, 28, 1)), classes, rng.normal(size=(3, 28, 28, 2)), np.array([5, 9, 12]),
                          top_pairs(classes, 2))
    texts = {text.get_text() for text in figure.findobj(lambda artist: hasattr(artist, "get_text"))}
    assert {"Shirt taken for T-shirt/top: 2 mistakes", "Coat taken for Pullover: 1 mistakes"} <= texts
    assert {"test image 9", "for Shirt", "for T-shirt/top", "mean T-shirt/top\nminus Shirt"} <= texts
