"""params.yaml's values, checked, and the errors a user can fix, reported as one line."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

PARAMS_FILE = "params.yaml"


class PipelineError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(), turning a PipelineError into a one-line message and exit code 1."""
    try:
        main()
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except FileNotFoundError as error:  # an input another stage makes: dvc repro runs that stage first
        print(f"error: {error.filename}: no such file; `dvc repro` makes the pipeline's files", file=sys.stderr)
        sys.exit(1)


def parse_paths(stage: str, doc: str, names: list[str], argv: list[str] | None = None) -> list[Path]:
    """Return a stage's paths from its command line, in the order of names.

    A wrong count prints the usage line (`python -m stages.<stage> NAME ...`) and exits with code 2.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}", description=doc.strip().splitlines()[0])
    for name in names:
        parser.add_argument(name, type=Path, metavar=name.upper())
    arguments = parser.parse_args(argv)
    return [getattr(arguments, name) for name in names]


def read_params(section: str, types: dict[str, type]) -> dict:
    """Return the keys of one params.yaml section, checked against their expected types."""
    try:
        with open(PARAMS_FILE) as file:
            params = yaml.safe_load(file) or {}
    except (OSError, yaml.YAMLError) as error:
        raise PipelineError(f"cannot read {PARAMS_FILE}: {error}") from None
    values = params.get(section)
    if not isinstance(values, dict):
        raise PipelineError(f"{PARAMS_FILE} has no section '{section}'; add it (see README)")
    checked = {}
    for key, expected in types.items():
        if key not in values:
            raise PipelineError(f"{PARAMS_FILE} is missing the key {section}.{key}; add it (see README)")
        checked[key] = check_type(f"{section}.{key}", values[key], expected)
    return checked


def check_type(name: str, value: object, expected: type) -> object:
    """Return value if it has the expected type; an int is accepted where a float is expected."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int, but "epochs: true" is a mistake, not the number 1.
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    hint = " (write floats like 1.0e-3: YAML reads 1e-3 as a string)" if expected is float else ""
    raise PipelineError(
        f"{PARAMS_FILE}: {name} must be {expected.__name__}, got {value!r}{hint}"
    )


def require_positive(name: str, value: int | float) -> None:
    """Fail with a clear message unless value > 0."""
    if value <= 0:
        raise PipelineError(f"{PARAMS_FILE}: {name} must be positive, got {value}")


def is_terminal() -> bool:
    """True when progress bars are for a person, not a CI log."""
    return sys.stderr.isatty()
