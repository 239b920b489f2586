"""preprocess: IDX files to (N, 28, 28, 1) float32 pixels in [0, 1] and uint8 labels."""

import gzip

import numpy as np
from conftest import TEST_SIZE, TRAIN_SIZE, idx_bytes, run_stage, synthetic_split
from test_fetch import assert_one_line_error

from stages.common import PipelineError, parse_idx
from stages.preprocess import scale


def test_scale_gives_model_input_format():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = scale(images)
    assert x.dtype == np.float32 and x.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(x[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]])


def test_parse_idx_round_trip_and_truncation():
    images, _ = synthetic_split(3, seed=0)
    np.testing.assert_array_equal(parse_idx(idx_bytes(images), "x"), images)
    try:
        parse_idx(idx_bytes(images)[:-1], "x")
    except PipelineError as error:
        assert "fetch it again" in str(error)
    else:
        raise AssertionError("a truncated IDX file was accepted")


def test_writes_both_splits(workdir):
    run_stage("fetch", "raw", cwd=workdir)
    run_stage("preprocess", "raw", "train", "test", cwd=workdir)
    images, labels = synthetic_split(TRAIN_SIZE, seed=0)
    x_train, y_train = np.load(workdir / "train/x.npy"), np.load(workdir / "train/y.npy")
    assert x_train.shape == (TRAIN_SIZE, 28, 28, 1) and x_train.dtype == np.float32
    np.testing.assert_array_equal(y_train, labels)
    np.testing.assert_allclose(x_train[..., 0] * 255, images, atol=1e-4)
    assert np.load(workdir / "test/x.npy").shape == (TEST_SIZE, 28, 28, 1)


def test_label_count_mismatch_is_a_clear_error(workdir):
    run_stage("fetch", "raw", cwd=workdir)
    labels_path = workdir / "raw/t10k-labels-idx1-ubyte.gz"
    _, labels = synthetic_split(TEST_SIZE - 1, seed=1)
    labels_path.write_bytes(gzip.compress(idx_bytes(labels)))
    result = run_stage("preprocess", "raw", "train", "test", cwd=workdir, check=False)
    assert_one_line_error(result, f"{TEST_SIZE} images but {TEST_SIZE - 1} labels")
    assert not (workdir / "test").exists() or not any((workdir / "test").iterdir())
