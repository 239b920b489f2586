"""common: the helpers every stage shares, and how a stage reports a bad input."""

import gzip

import pytest

from fashion_shap.data import read_gzip
from fashion_shap.params import PipelineError, run


def test_corrupt_stream_behind_a_valid_gzip_header_is_a_pipeline_error(tmp_path):
    path = tmp_path / "broken.gz"
    data = bytearray(gzip.compress(bytes(range(256)) * 64))
    data[20:40] = bytes(20)  # the deflate stream, after the 10-byte header
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="broken.gz is not a readable gzip file"):
        read_gzip(path)


def test_missing_input_is_one_line_naming_the_file(tmp_path, capsys):
    def main():
        (tmp_path / "data/test/x.npy").read_bytes()

    with pytest.raises(SystemExit) as exit_info:
        run(main)
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error == f"error: {tmp_path}/data/test/x.npy: no such file; `dvc repro` makes the pipeline's files"


def test_pipeline_error_is_its_message_and_exit_code_one(capsys):
    def main():
        raise PipelineError("params.yaml: train.epochs must be positive, got 0")

    with pytest.raises(SystemExit) as exit_info:
        run(main)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: params.yaml: train.epochs must be positive, got 0\n"
