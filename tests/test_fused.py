"""fused: each compiled loop stands where its run of plain rules is, and a model off them says so in one log line.

That each loop equals the plain rules it replaces: tests/test_kernels_input.py, test_kernels_block.py and
test_kernels_top.py.
"""

import logging
import re

import keras
import pytest
from keras import layers
from test_deepshap import stack

from deepshap import RULES, Rule
from deepshap.fused import cover
from deepshap.network import Network
from deepshap.pooling import max_pool


def segment_names(model: keras.Model) -> list[str]:
    steps = Network(model, fuse=False).steps
    return [segment.loop.name if segment.loop else steps[segment.start].rule.backward.__name__
            for segment in cover(steps)]


@pytest.mark.parametrize("name, segments", [
    ("lab", ["input block", "reshape", "top"]),
    ("two hidden dense", ["input block", "reshape", "dense", "relu", "top"]),
    ("dropout and batch norm", ["input block", "reshape", "top"]),
    ("same padding and batch norm blocks", ["conv block", "conv block", "reshape", "top"]),
    # The input block's loop reads no padding: a padded conv at the input runs as a conv block. (It ran
    # the input block's loop, which wrote past its array for a kernel of 2: a crash.)
    ("same padding, kernel 2", ["conv block", "reshape", "top"]),
    ("average pooling", ["conv", "relu", "average_pool", "reshape", "top"]),
])
def test_each_loop_covers_the_steps_its_pattern_matches(name, segments):
    assert segment_names(stack(name)) == segments


def test_a_replaced_rule_takes_its_steps_off_the_loop_that_stood_for_it(monkeypatch):
    monkeypatch.setitem(RULES, layers.MaxPooling2D, Rule(max_pool, needs_values=True))  # the same rule, anew
    assert segment_names(stack("lab")) == ["conv", "relu", "max_pool", "reshape", "top"]


def linear_top() -> keras.Model:
    inputs = keras.Input(shape=(14, 14, 1))
    x = layers.MaxPooling2D(2)(layers.Conv2D(4, 3, activation="relu")(inputs))
    return keras.Model(inputs, layers.Dense(4, activation="softmax", name="head")(layers.Flatten()(x)))


@pytest.mark.parametrize("model, named", [
    (lambda: stack("average pooling"), [r"\(Conv2D\)", r"\(AveragePooling2D\)"]),
    (lambda: stack("same padding, stride 2"), [r"\(Conv2D\)", r"\(MaxPooling2D\)"]),  # neither stride 1 nor valid
    (linear_top, [r"'head' \(Dense\)"]),  # a top that is not Dense -> ReLU -> Dense
])
def test_layers_off_the_compiled_loops_are_named_in_one_log_line(model, named, caplog):
    model = model()
    with caplog.at_level(logging.WARNING, logger="deepshap"):
        Network(model)
        Network(model, fuse=False)  # the plain rules asked for: nothing to say
    (record,) = [record for record in caplog.records if record.name.startswith("deepshap")]
    for pattern in named:
        assert re.search(pattern, record.getMessage()), record.getMessage()
    assert "Flatten" not in record.getMessage()  # a reshape costs nothing


def test_a_model_on_the_compiled_loops_logs_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="deepshap"):
        Network(stack("two conv blocks"))
    assert not [record for record in caplog.records if record.name.startswith("deepshap")]
