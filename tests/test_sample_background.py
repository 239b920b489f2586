"""sample_background: a seeded sample of training images, without replacement."""

import numpy as np
import pytest
import yaml
from conftest import BACKGROUND_SIZE, TRAIN_SIZE, write_params

from fashion_shap.params import PipelineError
from stages.sample_background import main, sample_background


def test_sample_is_seeded_and_without_replacement():
    images = np.arange(100).reshape(100, 1)
    first = sample_background(images, size=50, seed=3)
    np.testing.assert_array_equal(first, sample_background(images, size=50, seed=3))
    assert len(np.unique(first)) == 50
    assert not np.array_equal(first, sample_background(images, size=50, seed=4))


def test_larger_than_the_training_set_fails():
    with pytest.raises(PipelineError, match="lower it"):
        sample_background(np.zeros((5, 1)), size=6, seed=0)


def test_writes_the_sample_its_params_ask_for(prepared):
    background = np.load(prepared / "data/background.npy")
    x_train = np.load(prepared / "data/train/x.npy")
    params = yaml.safe_load((prepared / "params.yaml").read_text())["sample_background"]
    assert background.shape == (BACKGROUND_SIZE, 28, 28, 1)
    np.testing.assert_array_equal(background, sample_background(x_train, params["size"], params["seed"]))


def test_size_above_the_training_set_names_the_param_and_writes_nothing(prepared, tmp_path, monkeypatch):
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["sample_background"]["size"] = TRAIN_SIZE + 1
    write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match=f"sample_background.size is {TRAIN_SIZE + 1}, .* only {TRAIN_SIZE} images"):
        main([str(prepared / "data/train"), "background.npy"])
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]
