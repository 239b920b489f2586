"""params.yaml's values, checked, and the errors a user can fix, reported as one line; a stage that is
stopped (Ctrl-C, SIGTERM, or the death of the `dvc repro` that started it) also ends in one line."""

import argparse
import errno
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

PARAMS_FILE = "params.yaml"
INTERRUPTED = 130  # the exit code of a program stopped by Ctrl-C: 128 + SIGINT
LAUNCHER_POLL = 0.5  # seconds between checks that the process that started the stage is still there
SHELLS = {b"sh", b"dash", b"bash", b"zsh", b"ksh", b"fish"}  # the shells dvc may run a stage's command with
# No room left for a write, or a file-size limit, wherever it strikes: the outputs go through
# fashion_shap.files, which names them, but numba's cache, for one, is written along the way.
FULL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class PipelineError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def run(main: Callable[[], None]) -> None:
    """Run a stage's main() as its command, then end the process: a PipelineError, a missing input or a full disk
    becomes a one-line message and exit code 1, a stop (Ctrl-C, SIGTERM, the launcher gone) "error: interrupted"
    and exit code 130, once main's finally blocks have cleaned up (shut Ray down, removed temporary files)."""
    if not gc.isenabled():
        # Off while the stage's modules loaded (stages/__init__.py). Their objects live as long as the process: they
        # leave the collector's view (freeze) rather than be gone over at its next passes (measured, 3 runs
        # alternated: the explain stage's fixed cost 2.3-2.5 s -> 2.0-2.1 s; without freeze, no gain).
        gc.freeze()
        gc.enable()
    try:
        with interruptible():
            main()
        # Success skips the interpreter's teardown (atexit functions, freeing every module): main has written,
        # closed and renamed its outputs and shut Ray down. With TensorFlow loaded the teardown took 1.1 s
        # (measured), a second of every stage.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except FileNotFoundError as error:  # an input another stage makes: dvc repro runs that stage first
        print(f"error: {error.filename}: no such file; `dvc repro` makes the pipeline's files", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        if error.errno not in FULL_DISK:
            raise  # a bug: its traceback helps
        failed = f"cannot write {error.filename}" if error.filename else "a write failed"
        print(f"error: {failed}: {os.strerror(error.errno)}; free space or fix the limit, then run the stage again",
              file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED)


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and the death of the launcher (see launcher()) raise KeyboardInterrupt
    in the main thread.

    SIGTERM is what a CI timeout or `kill` sends; SIGINT is set too, as a shell ignores it in a job it starts
    in the background. A killed `dvc repro` signals none of its children: without the watch, the stage and
    its Ray would run on, writing outputs nobody waits for.
    """
    handlers = {number: signal.signal(number, signal.default_int_handler) for number in (signal.SIGINT, signal.SIGTERM)}
    done = threading.Event()
    threading.Thread(target=watch_launcher, args=(launcher(), done), daemon=True).start()
    try:
        yield
    finally:
        done.set()
        for number, handler in handlers.items():
            signal.signal(number, handler)


def launcher() -> list[int]:
    """Return the process that started this one, as the chain of ids from the parent up to it: the parent,
    or the parent and its parent where the parent is a shell running this command alone (dvc runs
    `$SHELL -c cmd`; bash replaces itself with the command, but dash waits for it and outlives a killed dvc)."""
    parent = os.getppid()
    try:
        arguments = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")[:-1]
        stat = Path(f"/proc/{parent}/stat").read_text()
    except OSError:  # no /proc (macOS), or the parent is gone already: the parent is all there is to watch
        return [parent]
    if len(arguments) >= 3 and arguments[-2] == b"-c" and os.path.basename(arguments[0]).lstrip(b"-") in SHELLS:
        return [parent, int(stat.rpartition(")")[2].split()[1])]  # the field after the state: its parent's id
    return [parent]


def watch_launcher(chain: list[int], done: threading.Event) -> None:
    """Interrupt the main thread, as Ctrl-C does, once the launcher chain changes (a process of it ended, and
    its children went to another parent); return when done is set."""
    while not done.wait(LAUNCHER_POLL):
        if launcher() != chain:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            return


def parse_paths(stage: str, doc: str, names: list[str], argv: list[str] | None = None) -> list[Path]:
    """Return a stage's paths from its command line, in the order of names.

    A wrong count prints the usage line (`python -m stages.<stage> NAME ...`) and exits with code 2.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=doc.strip().splitlines()[0])
    for name in names:
        parser.add_argument(name, type=Path, metavar=name.upper())
    arguments = parser.parse_args(argv)
    return [getattr(arguments, name) for name in names]


def read_params(section: str | None, types: dict[str, type], path: str | Path = PARAMS_FILE) -> dict:
    """Return the keys of one section of a YAML file (None: the whole file), checked against their expected types.

    The file is params.yaml, the knobs, unless path names another (the data's source, read by fetch).
    """
    try:
        with open(path) as file:
            content = yaml.safe_load(file) or {}
    except (OSError, yaml.YAMLError) as error:
        raise PipelineError(f"cannot read {path}: {error}") from None
    values = content if section is None else content.get(section)
    if not isinstance(values, dict):
        raise PipelineError(f"{path} has no section '{section}'; add it (see README)")
    checked = {}
    for key, expected in types.items():
        name = key if section is None else f"{section}.{key}"
        if key not in values:
            raise PipelineError(f"{path} is missing the key {name}; add it (see README)")
        checked[key] = check_type(name, values[key], expected, path)
    return checked


def check_type(name: str, value: object, expected: type, path: str | Path = PARAMS_FILE) -> object:
    """Return value if it has the expected type; an int is accepted where a float is expected."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int, but "epochs: true" is a mistake, not the number 1.
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    hint = " (write floats like 1.0e-3: YAML reads 1e-3 as a string)" if expected is float else ""
    raise PipelineError(f"{path}: {name} must be {expected.__name__}, got {value!r}{hint}")


def require_positive(name: str, value: int | float) -> None:
    """Fail with a clear message unless value > 0."""
    if value <= 0:
        raise PipelineError(f"{PARAMS_FILE}: {name} must be positive, got {value}")


def require_at_most(name: str, value: int, available: int, what: str) -> None:
    """Fail with a clear message unless value <= available: a size beyond the images there are would
    otherwise be cut to all of them without a word, and the run would not be the one asked for."""
    if value > available:
        raise PipelineError(f"{name} is {value}, but {what} has only {available} images; lower it in {PARAMS_FILE}")


def is_terminal() -> bool:
    """True when progress bars are for a person, not a CI log."""
    return sys.stderr.isatty()
