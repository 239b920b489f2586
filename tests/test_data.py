"""data: a damaged gzip file is a one-line error naming it."""

import gzip

import pytest

from fashion_shap.data import read_gzip
from fashion_shap.params import PipelineError


def test_corrupt_stream_behind_a_valid_gzip_header_is_a_pipeline_error(tmp_path):
    path = tmp_path / "broken.gz"
    data = bytearray(gzip.compress(bytes(range(256)) * 64))
    data[20:40] = bytes(20)  # the deflate stream, after the 10-byte header
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="broken.gz is not a readable gzip file"):
        read_gzip(path)
