"""model: the CNN params.yaml's model section describes, and a weights file that carries its architecture."""

import keras
import numpy as np
import pytest
import yaml
from conftest import ROOT

from deepshap import Explainer
from fashion_shap.model import build_model, check_architecture, load_model, save_weights
from fashion_shap.params import PipelineError


def lab_architecture() -> dict:
    return dict(yaml.safe_load((ROOT / "params.yaml").read_text())["model"])


def test_default_params_give_the_labs_cnn():
    model = build_model(**lab_architecture())
    assert [layer.__class__.__name__ for layer in model.layers] == [
        "InputLayer", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense",
    ]
    assert model.output_shape == (None, 10)
    assert model.count_params() == 32 * 10 + 5408 * 256 + 256 + 2570


def test_configured_model_has_its_blocks_and_the_fast_engine_takes_it():
    architecture = dict(lab_architecture(), conv_filters=[8, 16], dense_units=[32, 16], dropout=0.25,
                        batch_norm=True, padding="same")
    model = build_model(**architecture)
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 2 and kinds.count("BatchNormalization") == 2 and kinds.count("Dropout") == 2
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [32, 16, 10]
    flatten = next(layer for layer in model.layers if isinstance(layer, keras.layers.Flatten))
    assert flatten.input.shape[1:] == (7, 7, 16)  # 28 -> 14 -> 7 with same padding
    Explainer(model)  # every layer has a rule: no UnsupportedModelError


def test_weights_file_carries_the_architecture_and_saves_to_the_same_bytes(tmp_path):
    architecture = dict(lab_architecture(), conv_filters=[4, 6], dense_units=[12])
    keras.utils.set_random_seed(0)
    model = build_model(**architecture)
    save_weights(model, tmp_path / "a.weights.h5", architecture)
    save_weights(model, tmp_path / "b.weights.h5", architecture)
    assert (tmp_path / "a.weights.h5").read_bytes() == (tmp_path / "b.weights.h5").read_bytes()
    loaded = load_model(tmp_path / "a.weights.h5")
    assert [layer.__class__.__name__ for layer in loaded.layers] == [layer.__class__.__name__ for layer in model.layers]
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))


def test_a_file_without_architecture_is_a_clear_error(tmp_path):
    model = build_model(**lab_architecture())
    model.save_weights(tmp_path / "bare.weights.h5")
    with pytest.raises(PipelineError, match=r"holds no architecture\); run the train stage again"):
        load_model(tmp_path / "bare.weights.h5")


@pytest.mark.parametrize("change, message", [
    ({"conv_filters": []}, "model.conv_filters must hold at least one conv block"),
    ({"conv_filters": [32, "64"]}, "model.conv_filters must be int"),
    ({"dense_units": [0]}, "model.dense_units must be positive"),
    ({"padding": "full"}, "model.padding must be one of valid, same"),
    ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
    ({"conv_filters": [8, 8, 8, 8]}, "more than a 28x28 image holds"),
])
def test_bad_model_params_name_the_param(change, message):
    with pytest.raises(PipelineError, match=message):
        check_architecture(dict(lab_architecture(), **change))
