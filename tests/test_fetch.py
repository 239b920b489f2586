"""fetch: offline first, download as a fallback, every file verified by the SHA-256 of its content."""

import functools
import http.server
import threading

import pytest
import yaml
from conftest import run_stage, write_params

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def read_params(directory):
    return yaml.safe_load((directory / "params.yaml").read_text())


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ")
    for fragment in fragments:
        assert fragment in error


def test_copies_verified_files_from_the_first_search_dir(workdir, raw_files):
    raw_dir, _ = raw_files
    result = run_stage("fetch", "out", cwd=workdir)
    for name in NAMES:
        assert (workdir / "out" / f"{name}.gz").read_bytes() == (raw_dir / f"{name}.gz").read_bytes()
    assert result.stdout.count("SHA-256 verified") == 4


def test_wrong_hash_names_file_and_hashes_and_leaves_nothing(workdir):
    params = read_params(workdir)
    good = params["fetch"]["sha256"]["t10k-labels-idx1-ubyte"]
    params["fetch"]["sha256"]["t10k-labels-idx1-ubyte"] = "0" * 64
    write_params(workdir, params)
    result = run_stage("fetch", "out", cwd=workdir, check=False)
    assert_one_line_error(result, "t10k-labels-idx1-ubyte.gz", good, "0" * 64, "dataset-fashion-mnist")
    assert not (workdir / "out" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not any(path.name.startswith(".tmp") for path in (workdir / "out").iterdir())


def test_corrupt_file_is_a_clear_error(workdir, tmp_path_factory):
    params = read_params(workdir)
    broken = tmp_path_factory.mktemp("broken")
    for name in NAMES:
        (broken / f"{name}.gz").write_bytes(b"not gzip at all")
    params["fetch"]["search_dirs"] = [str(broken)]
    write_params(workdir, params)
    result = run_stage("fetch", "out", cwd=workdir, check=False)
    assert_one_line_error(result, "not a readable gzip file")
    assert list((workdir / "out").iterdir()) == []


@pytest.fixture
def http_server(raw_files):
    """Serve the synthetic files on the loopback interface, as the canonical URL would."""
    raw_dir, _ = raw_files
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(raw_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_downloads_when_no_search_dir_has_the_files(workdir, raw_files, http_server, tmp_path):
    raw_dir, _ = raw_files
    params = read_params(workdir)
    params["fetch"]["search_dirs"] = [str(tmp_path / "empty")]
    params["fetch"]["url"] = http_server
    write_params(workdir, params)
    result = run_stage("fetch", "out", cwd=workdir)
    assert http_server in result.stdout
    for name in NAMES:
        assert (workdir / "out" / f"{name}.gz").read_bytes() == (raw_dir / f"{name}.gz").read_bytes()


def test_no_local_copy_and_no_network_says_how_to_work_offline(workdir, tmp_path):
    params = read_params(workdir)
    params["fetch"]["search_dirs"] = [str(tmp_path / "empty")]
    write_params(workdir, params)
    result = run_stage("fetch", "out", cwd=workdir, check=False)
    assert_one_line_error(result, "downloading", "apt-get install dataset-fashion-mnist")
    assert list((workdir / "out").iterdir()) == []


def test_missing_param_is_named(workdir):
    params = read_params(workdir)
    del params["fetch"]["url"]
    write_params(workdir, params)
    result = run_stage("fetch", "out", cwd=workdir, check=False)
    assert_one_line_error(result, "fetch.url")
