"""trust.deletion: a model that looks at one pixel passes the deletion test under every rule."""

import numpy as np
from trust_models import PIXEL, SIDE, one_pixel_model, speckled

from fashion_shap.trust.deletion import area, deletion_metrics, deletion_test
from fashion_shap.trust.rules import RULES, rule_explainers, rule_maps


def test_one_pixel_model_gets_all_attribution_there_and_passes_the_deletion_test():
    model = one_pixel_model()
    images, background = speckled(4, 0, 1.0), speckled(12, 1, 0.0)
    predicted = np.zeros(len(images), dtype=int)  # class 0, the pixel being bright
    explainers = rule_explainers(model, chunk_size=5)
    np.testing.assert_array_equal(explainers["shap"].predict(images).argmax(axis=1), predicted)
    maps = rule_maps(explainers, background, images, predicted)
    elsewhere = np.ones((SIDE, SIDE), dtype=bool)
    elsewhere[PIXEL] = False
    for name in RULES:
        assert maps[name].shape == images.shape and np.abs(maps[name][:, elsewhere]).max() == 0.0
    assert maps["shap"][:, PIXEL[0], PIXEL[1], 0].min() > 0.4  # from about 0.5 to about 1

    curves = deletion_test(explainers["shap"].predict, images, predicted, maps, background.mean(axis=0), 36, 5,
                           np.random.default_rng(0))
    metrics = deletion_metrics(curves, RULES)
    # Each rule's order removes the pixel first: the probability falls to 0.5 at once; reverse order keeps it last.
    for name in RULES:
        rule = metrics[name]
        assert rule["auc_rule_order"] < 0.52 < metrics["auc_random_order"] < rule["auc_reverse_order"]
        assert metrics[name]["faithful_share"] == 1.0
    assert area(curves["random_order"]).shape == (4,)
