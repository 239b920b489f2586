"""params: how a stage reports a bad input, in one line."""


import pytest

from fashion_shap.params import PipelineError, run


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
