"""data: a damaged gzip file is a one-line error naming it; the predictions evaluate records read back."""

import gzip

import numpy as np
import pytest

from fashion_shap.data import load_predicted, prediction_rows, read_gzip
from fashion_shap.files import save_csv
from fashion_shap.params import PipelineError


def test_corrupt_stream_behind_a_valid_gzip_header_is_a_pipeline_error(tmp_path):
    path = tmp_path / "broken.gz"
    data = bytearray(gzip.compress(bytes(range(256)) * 64))
    data[20:40] = bytes(20)  # the deflate stream, after the 10-byte header
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="broken.gz is not a readable gzip file"):
        read_gzip(path)


def test_the_predictions_evaluate_records_read_back_and_a_stale_record_names_the_stage_to_rerun(tmp_path):
    path = tmp_path / "confusion.csv"
    labels, predicted = np.array([0, 9, 4, 6]), np.array([0, 7, 2, 6])
    save_csv(path, prediction_rows(labels, predicted))
    assert path.read_text().splitlines()[:2] == ["actual,predicted", "T-shirt/top,T-shirt/top"]
    np.testing.assert_array_equal(load_predicted(path, 4), predicted)
    with pytest.raises(PipelineError, match="confusion.csv is not the evaluate stage's predictions of the 5 test "
                                            "images; run the evaluate stage again"):
        load_predicted(path, 5)
    path.write_text("actual,predicted\nShirt,Jacket\n")  # no such class
    with pytest.raises(PipelineError, match="run the evaluate stage again"):
        load_predicted(path, 1)
