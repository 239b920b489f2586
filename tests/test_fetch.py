"""fetch: offline first, download as a fallback, every file verified by the SHA-256 of its content."""

import functools
import http.server
import threading
from contextlib import contextmanager

import pytest
import yaml
from conftest import SOURCE, assert_one_line_error, run_stage

from fashion_shap.params import PipelineError
from stages.fetch import main

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def read_source(directory) -> dict:
    return yaml.safe_load((directory / SOURCE).read_text())


def write_source(directory, source: dict) -> None:
    (directory / SOURCE).write_text(yaml.safe_dump(source, sort_keys=False))


def fetch_error(directory, monkeypatch) -> str:
    """Run the stage in-process in directory, which must fail; return its one-line error."""
    monkeypatch.chdir(directory)
    with pytest.raises(PipelineError) as caught:
        main([SOURCE, "out"])
    message = str(caught.value)
    assert "\n" not in message
    return message


def assert_nothing_written(directory):
    # Neither a half-written file nor the temporary copy it was verified in.
    assert list((directory / "out").iterdir()) == []


def use_search_dir(directory, search_dir, url=None):
    source = read_source(directory)
    source["search_dirs"] = [str(search_dir)]
    if url is not None:
        source["url"] = url
    write_source(directory, source)


def write_truncated_copies(raw_dir, directory):
    """Write the first half of each synthetic .gz file into directory, as an interrupted copy would."""
    directory.mkdir()
    for name in NAMES:
        data = (raw_dir / f"{name}.gz").read_bytes()
        (directory / f"{name}.gz").write_bytes(data[: len(data) // 2])


@contextmanager
def serving(directory):
    """Serve directory's files on the loopback interface, as the canonical URL would; yield its URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def test_copies_verified_files_from_the_first_search_dir(workdir, raw_files, monkeypatch, capsys):
    raw_dir, _ = raw_files
    monkeypatch.chdir(workdir)
    main([SOURCE, "out"])
    for name in NAMES:
        assert (workdir / "out" / f"{name}.gz").read_bytes() == (raw_dir / f"{name}.gz").read_bytes()
    assert capsys.readouterr().out.count("SHA-256 verified") == 4


def test_wrong_hash_names_file_and_hashes_and_leaves_nothing(workdir, monkeypatch):
    source = read_source(workdir)
    good = source["sha256"]["t10k-labels-idx1-ubyte"]
    source["sha256"]["t10k-labels-idx1-ubyte"] = "0" * 64
    write_source(workdir, source)
    error = fetch_error(workdir, monkeypatch)
    for fragment in ("t10k-labels-idx1-ubyte.gz", good, "0" * 64, "dataset-fashion-mnist"):
        assert fragment in error
    assert not (workdir / "out" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not any(path.name.startswith(".tmp") for path in (workdir / "out").iterdir())


@pytest.mark.slow
def test_corrupt_file_is_a_one_line_error_on_the_command_line(workdir, tmp_path_factory):
    broken = tmp_path_factory.mktemp("broken")
    for name in NAMES:
        (broken / f"{name}.gz").write_bytes(b"not gzip at all")
    use_search_dir(workdir, broken)
    result = run_stage("fetch", SOURCE, "out", cwd=workdir, check=False)
    assert_one_line_error(result, "not a readable gzip file")
    assert_nothing_written(workdir)


def test_truncated_file_is_named_where_the_user_must_replace_it(workdir, raw_files, tmp_path, monkeypatch):
    raw_dir, _ = raw_files
    truncated = tmp_path / "truncated"
    write_truncated_copies(raw_dir, truncated)
    use_search_dir(workdir, truncated)
    error = fetch_error(workdir, monkeypatch)
    # The first file fetched is the first of the source's sha256 keys.
    assert error.startswith(f"{truncated / NAMES[0]}.gz is not a readable gzip file")
    assert "replace it with the original file" in error
    assert ".tmp" not in error
    assert_nothing_written(workdir)


def test_truncated_download_is_named_by_its_url(workdir, raw_files, tmp_path, monkeypatch):
    raw_dir, _ = raw_files
    truncated = tmp_path / "truncated"
    write_truncated_copies(raw_dir, truncated)
    with serving(truncated) as url:
        use_search_dir(workdir, tmp_path / "empty", url=url)
        error = fetch_error(workdir, monkeypatch)
    assert error.startswith(f"{url}{NAMES[0]}.gz is not a readable gzip file")
    assert "replace it" in error and ".tmp" not in error
    assert_nothing_written(workdir)


def test_downloads_when_no_search_dir_has_the_files(workdir, raw_files, tmp_path, monkeypatch, capsys):
    raw_dir, _ = raw_files
    with serving(raw_dir) as url:
        use_search_dir(workdir, tmp_path / "empty", url=url)
        monkeypatch.chdir(workdir)
        main([SOURCE, "out"])
    assert url in capsys.readouterr().out
    for name in NAMES:
        assert (workdir / "out" / f"{name}.gz").read_bytes() == (raw_dir / f"{name}.gz").read_bytes()


def test_no_local_copy_and_no_network_says_how_to_work_offline(workdir, tmp_path, monkeypatch):
    use_search_dir(workdir, tmp_path / "empty")
    error = fetch_error(workdir, monkeypatch)
    assert "downloading" in error and "apt-get install dataset-fashion-mnist" in error
    assert_nothing_written(workdir)


def test_missing_key_of_the_source_is_named_with_its_file(workdir, monkeypatch):
    source = read_source(workdir)
    del source["url"]
    write_source(workdir, source)
    assert fetch_error(workdir, monkeypatch) == f"{SOURCE} is missing the key url; add it (see README)"
