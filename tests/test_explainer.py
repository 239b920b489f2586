"""Explainer: several head rules in one pass, each equal to its own explainer's values; a prepared background;
the next chunk made while the caller works on one."""

import threading

import numpy as np
import pytest
from trust_models import random_images, small_model

from deepshap import Explainer
from deepshap import explainer as explainer_module
from deepshap.explainer import ahead
from fashion_shap.trust.rules import RULES


@pytest.mark.parametrize("classes", [None, np.array([[3, 1], [0, 9], [4, 4]])])
def test_heads_in_one_pass_equal_each_rule_alone(classes):
    model, images, background = small_model(), random_images(3, 0), random_images(7, 1)
    explainers = {name: Explainer(model, output, rule, chunk_size=4) for name, (output, rule) in RULES.items()}
    heads = {name: explainer.head for name, explainer in explainers.items()}
    together = explainers["shap"].shap_values_for_heads(heads, images, background, classes)
    assert list(together) == list(RULES)
    for name, explainer in explainers.items():
        alone = explainer.shap_values(images, background, classes)
        assert together[name].shape == alone.shape
        np.testing.assert_allclose(together[name], alone, rtol=0, atol=1e-6 * np.abs(alone).max())


def test_a_prepared_background_gives_the_same_bytes():
    model, images, background = small_model(), random_images(3, 0), random_images(7, 1)
    explainer = Explainer(model, "probability", "shap", chunk_size=3)
    prepared = explainer.prepare(background)
    assert len(prepared) == len(background) and len(prepared.chunks) == 3  # chunks of 3, 3 and 1
    classes = np.array([[3, 1], [0, 9], [4, 4]])
    np.testing.assert_array_equal(explainer.shap_values(images, prepared, classes),
                                  explainer.shap_values(images, background, classes))


@pytest.mark.parametrize("output", ["probability", "logit"])
def test_the_expected_value_after_an_explanation_comes_from_its_forward_pass_with_the_same_bytes(output):
    model, images, background = small_model(), random_images(3, 0), random_images(7, 1)
    fresh = Explainer(model, output, chunk_size=3).expected_value(background)
    explainer = Explainer(model, output, chunk_size=3)
    explainer.shap_values(images, background)
    forward, calls = explainer.network.forward, []
    explainer.network.forward = lambda images: calls.append(len(images)) or forward(images)
    assert explainer.expected_value(background).tobytes() == fresh.tobytes()
    assert calls == []  # no forward pass again
    assert explainer.expected_value(background.copy()).tobytes() == fresh.tobytes()
    assert calls == [len(background)]  # another array: its own forward pass


def test_ahead_yields_every_item_in_order_and_makes_the_next_one_while_the_caller_holds_this_one():
    made = [threading.Event() for _ in range(4)]

    def items():
        for number, event in enumerate(made):
            event.set()
            yield number

    seen = []
    for number in ahead(items()):
        if number + 1 < len(made):
            assert made[number + 1].wait(timeout=10), f"item {number + 1} was not made while the caller held {number}"
        seen.append(number)
    assert seen == [0, 1, 2, 3]


def test_ahead_raises_an_items_error_in_the_caller():
    def items():
        yield 0
        raise OSError("a chunk could not be read")

    with pytest.raises(OSError, match="could not be read"):
        list(ahead(items()))


@pytest.mark.parametrize(("threads", "made_ahead"), [(1, False), (2, True)])
def test_chunks_are_made_ahead_only_where_the_loop_has_several_threads(monkeypatch, threads, made_ahead):
    model, images, background = small_model(), random_images(2, 0), random_images(5, 1)
    expected = Explainer(model, chunk_size=2).shap_values(images, background)  # the tests' one thread
    calls = []
    monkeypatch.setattr(explainer_module.numba, "get_num_threads", lambda: threads)
    monkeypatch.setattr(explainer_module, "ahead", lambda items: calls.append(threads) or ahead(items))
    values = Explainer(model, chunk_size=2).shap_values(images, background)
    assert calls == ([threads] if made_ahead else [])
    np.testing.assert_array_equal(values, expected)
