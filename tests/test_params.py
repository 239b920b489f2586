"""params: how a stage reports a bad input, and a stop, in one line, and how it ends."""

import errno
import os
import shlex
import signal
import subprocess
import sys
import time

import psutil
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


def test_a_stage_that_succeeds_exits_zero_with_all_it_printed_and_skips_the_teardown():
    """Printed without a newline to a pipe, the output is still in a buffer when main returns; an atexit
    function stands for the interpreter's teardown, which run() skips."""
    script = ("import atexit, sys\nfrom fashion_shap.params import run\n"
              "atexit.register(print, 'teardown')\n"
              "run(lambda: (print('done', end=''), print('note', end='', file=sys.stderr)))\n")
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done", "note")


@pytest.mark.parametrize("started_as, during_imports", [("-m", False), ("-c", True)])
def test_the_collector_is_off_while_a_stage_started_with_dash_m_loads_and_on_in_its_main(started_as, during_imports):
    """`python -m stages.<name>` has sys.argv[0] == "-m" while the stages package loads; a process that imports it
    otherwise (a test, a notebook) keeps the collector on throughout."""
    script = ("import gc, sys\nsys.argv[0] = " + repr(started_as) + "\nimport stages\nprint(gc.isenabled())\n"
              "from fashion_shap.params import run\n"
              "run(lambda: print(gc.isenabled(), gc.get_freeze_count() > 0))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(during_imports), "True", str(not during_imports)]


# --- A stage stopped: Ctrl-C, SIGTERM, or the process that started it gone ---

# A stand-in for a stage: run() around a main that waits, after saying it started (no TensorFlow to load).
WAITING_STAGE = ("import time\nfrom fashion_shap.params import run\n"
                 "def main():\n    print('started', flush=True)\n    time.sleep(60)\nrun(main)\n")


def wait_for_line(stream, expected: str) -> None:
    line = stream.readline()
    assert line.strip() == expected, line


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_stage_is_one_line_and_exit_code_130(number):
    stage = subprocess.Popen([sys.executable, "-c", WAITING_STAGE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    wait_for_line(stage.stdout, "started")
    stage.send_signal(number)
    _, stderr = stage.communicate(timeout=30)
    assert stage.returncode == 130
    assert stderr == "error: interrupted\n"


@pytest.mark.parametrize("through_shell", [False, True])
def test_a_stage_whose_launcher_is_killed_stops_in_one_line(tmp_path, through_shell):
    """As when a CI timeout kills `dvc repro` (SIGTERM, or SIGKILL): dvc signals none of its children. dvc
    starts the stage with `$SHELL -c`; dash, unlike bash, stays between them and outlives dvc."""
    stage_command = [sys.executable, "-c", WAITING_STAGE]
    if through_shell:
        stage_command = ["/bin/sh", "-c", shlex.join(stage_command)]
    # The launcher, dvc's stand-in: starts the command (its output to files), says its process id, waits for it.
    launcher_script = (f"import subprocess, sys\nwith open({str(tmp_path / 'err')!r}, 'w') as err, "
                       f"open({str(tmp_path / 'out')!r}, 'w') as out:\n"
                       f"    stage = subprocess.Popen({stage_command!r}, stdout=out, stderr=err)\n"
                       f"    print(stage.pid, flush=True)\n    stage.wait()\n")
    launcher = subprocess.Popen([sys.executable, "-c", launcher_script], stdout=subprocess.PIPE, text=True)
    started = psutil.Process(int(launcher.stdout.readline()))
    deadline = time.monotonic() + 30
    while (tmp_path / "out").read_text() != "started\n" and time.monotonic() < deadline:
        time.sleep(0.1)
    stage = started.children()[0] if through_shell else started  # the shell's one child
    launcher.kill()
    launcher.wait()
    assert stage.wait(timeout=10) in (130, None)  # None: not the test's child, its code is not known here
    assert (tmp_path / "err").read_text() == "error: interrupted\n"


@pytest.mark.parametrize("error, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/x.npy"),
     "error: cannot write /data/x.npy: No space left on device; free space or fix the limit, then run the stage again"),
    # numba writing its cache, as the explain stage met it with a file-size limit: no file named.
    (OSError(errno.EFBIG, "File too large"),
     "error: a write failed: File too large; free space or fix the limit, then run the stage again"),
])
def test_a_full_disk_anywhere_is_one_line(capsys, error, line):
    def main():
        raise error

    with pytest.raises(SystemExit) as exit_info:
        run(main)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == line + "\n"

