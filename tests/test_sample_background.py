"""sample_background: a seeded sample of training images, without replacement."""

import numpy as np
import pytest
import yaml
from conftest import BACKGROUND_SIZE, TRAIN_SIZE, run_stage, write_params
from test_fetch import assert_one_line_error

from stages.common import PipelineError
from stages.sample_background import sample_background


def test_sample_is_seeded_and_without_replacement():
    images = np.arange(100).reshape(100, 1)
    first = sample_background(images, size=50, seed=3)
    np.testing.assert_array_equal(first, sample_background(images, size=50, seed=3))
    assert len(np.unique(first)) == 50
    assert not np.array_equal(first, sample_background(images, size=50, seed=4))


def test_larger_than_the_training_set_fails():
    with pytest.raises(PipelineError, match="lower it"):
        sample_background(np.zeros((5, 1)), size=6, seed=0)


def test_writes_background_from_training_images(prepared, tmp_path):
    background = np.load(prepared / "data/background.npy")
    x_train = np.load(prepared / "data/train/x.npy")
    assert background.shape == (BACKGROUND_SIZE, 28, 28, 1)
    assert all(any(np.array_equal(image, other) for other in x_train) for image in background[:3])

    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["sample_background"]["size"] = TRAIN_SIZE + 1
    write_params(tmp_path, params)
    result = run_stage("sample_background", str(prepared / "data/train"), "bg.npy", cwd=tmp_path, check=False)
    assert_one_line_error(result, f"only {TRAIN_SIZE} images")
    assert not (tmp_path / "bg.npy").exists()
