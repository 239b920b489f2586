"""preprocess: IDX files to (N, 28, 28, 1) float32 pixels in [0, 1] and uint8 labels."""

import gzip

import numpy as np
import pytest
from conftest import SOURCE, TEST_SIZE, TRAIN_SIZE, assert_one_line_error, idx_bytes, run_stage, synthetic_split

from fashion_shap.data import parse_idx
from fashion_shap.params import PipelineError
from stages import fetch
from stages.preprocess import main, scale


def test_scale_gives_model_input_format():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = scale(images)
    assert x.dtype == np.float32 and x.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(x[0, :, :, 0], [[0.0, 1.0], [0.2, 0.4]])


def test_parse_idx_round_trip_and_truncation():
    images, _ = synthetic_split(3, seed=0)
    np.testing.assert_array_equal(parse_idx(idx_bytes(images), "x"), images)
    with pytest.raises(PipelineError, match="fetch it again"):
        parse_idx(idx_bytes(images)[:-1], "x")


def test_writes_both_splits(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    fetch.main([SOURCE, "raw"])
    main(["raw", "train", "test"])
    images, labels = synthetic_split(TRAIN_SIZE, seed=0)
    x_train, y_train = np.load(workdir / "train/x.npy"), np.load(workdir / "train/y.npy")
    assert x_train.shape == (TRAIN_SIZE, 28, 28, 1) and x_train.dtype == np.float32
    np.testing.assert_array_equal(y_train, labels)
    np.testing.assert_allclose(x_train[..., 0] * 255, images, atol=1e-4)
    assert np.load(workdir / "test/x.npy").shape == (TEST_SIZE, 28, 28, 1)


def test_wrong_path_count_prints_the_usage_line(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    with pytest.raises(SystemExit) as caught:
        main(["raw", "train"])
    assert caught.value.code == 2
    assert "usage: python -m stages.preprocess [-h] RAW_DIR TRAIN_DIR TEST_DIR" in capsys.readouterr().err


def write_one_label_short(workdir) -> None:
    """Fetch the synthetic files into workdir/raw, then drop the last test label."""
    fetch.main([SOURCE, "raw"])
    _, labels = synthetic_split(TEST_SIZE - 1, seed=1)
    (workdir / "raw/t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def test_label_count_mismatch_is_a_clear_error(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    write_one_label_short(workdir)
    with pytest.raises(PipelineError, match=f"t10k: {TEST_SIZE} images but {TEST_SIZE - 1} labels"):
        main(["raw", "train", "test"])
    assert not (workdir / "test").exists()


@pytest.mark.slow
def test_command_line_reports_an_error_in_one_line_without_traceback(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    write_one_label_short(workdir)
    result = run_stage("preprocess", "raw", "train", "test", cwd=workdir, check=False)
    assert_one_line_error(result, f"{TEST_SIZE} images but {TEST_SIZE - 1} labels")
