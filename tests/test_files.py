"""files: an output appears whole or not at all, and a failed write is one line naming the path."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fashion_shap.files import atomic_path, save_arrays, save_csv, save_json
from fashion_shap.params import PipelineError


def test_a_failing_block_keeps_the_last_good_output_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    save_json(path, {"good": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the stage failed half-way")
    assert path.read_text() == '{\n  "good": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_directory_of_arrays_is_replaced_whole(tmp_path):
    directory = tmp_path / "explanations"
    save_arrays(directory, {"a": np.zeros(2), "b": np.ones(3)})
    save_arrays(directory, {"c": np.arange(4)})
    assert sorted(p.name for p in directory.iterdir()) == ["c.npy"]
    np.testing.assert_array_equal(np.load(directory / "c.npy"), np.arange(4))


def test_csv_rows_keep_strings_and_round_floats(tmp_path):
    save_csv(tmp_path / "rows.csv", [{"name": "T-shirt/top", "value": 1 / 3, "size": 5000, "mean": np.float32(2 / 3)}])
    assert (tmp_path / "rows.csv").read_text() == "name,value,size,mean\nT-shirt/top,0.333333,5000,0.666667\n"


@pytest.mark.parametrize("limit", [0, 200])  # nothing fits; the first of two arrays fits, the second does not
def test_a_write_beyond_the_file_size_limit_is_one_line_and_leaves_no_output(tmp_path, limit):
    """A full disk, simulated by a file-size limit (RLIMIT_FSIZE): the write fails with EFBIG, as with ENOSPC."""
    script = textwrap.dedent(f"""
        import resource
        import numpy as np
        from fashion_shap.files import save_arrays
        from fashion_shap.params import run
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        run(lambda: save_arrays({str(tmp_path / "out")!r}, {{"small": np.zeros(2), "large": np.zeros(10_000)}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"error: cannot write {tmp_path / 'out'}: File too large; free space or fix the limit, " \
                            "then run the stage again\n"
    assert list(tmp_path.iterdir()) == []  # neither the directory nor its temporary


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(IsADirectoryError), atomic_path(tmp_path / "file.txt") as temporary:
        temporary.mkdir()
        (temporary / "x").write_text("x")
        open(temporary).read()  # a bug, not a full disk: its traceback is what a developer needs
    assert not isinstance(IsADirectoryError(), PipelineError)
