"""Every code file a stage runs is in its deps, and every code dep is run: else DVC keeps stale outputs
(a change to a file no stage lists reruns nothing) or reruns stages a change cannot touch.

A stage runs `python -m stages.<name>`: that module, the packages above it (their __init__.py), and
every project module it imports, at the top or inside a function, followed transitively. The walk
reads the code (ast), so it sees imports that run only on some params too.
"""

import ast
import shlex
from pathlib import Path

import pytest
from conftest import ROOT, pipeline_stages

PACKAGES = ("stages", "fashion_shap", "deepshap")  # the project's own code; anything else is installed


def module_file(name: str) -> Path | None:
    """Return the file of a project module or package, e.g. fashion_shap.data -> fashion_shap/data.py."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def with_parents(name: str) -> list[str]:
    """Return name and the packages above it, which Python runs first: a.b.c -> [a, a.b, a.b.c]."""
    parts = name.split(".")
    return [".".join(parts[: index + 1]) for index in range(len(parts))]


def imported_names(path: Path) -> set[str]:
    """Return every module name a file imports: import x.y; from x.y import z (z may be a module); and a
    string naming a project module, as importlib.import_module takes (deepshap's lazy names)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and module_file(node.value):
            names.add(node.value)
    return names


def files_run(module: str) -> set[Path]:
    """Return the project files that running module executes, transitively."""
    found: set[Path] = set()
    pending = with_parents(module)
    while pending:
        name = pending.pop()
        path = module_file(name)
        if path is None or path in found:
            continue
        found.add(path)
        pending.extend(parent for imported in imported_names(path) for parent in with_parents(imported))
    return found


def stage_module(stage: dict) -> str:
    words = shlex.split(stage["cmd"])
    assert words[:2] == ["python", "-m"], stage["cmd"]
    return words[2]


def code_deps(stage: dict) -> list[Path]:
    """Return the deps that are project code: a .py file, or a folder of a project package."""
    deps = [ROOT / dep for dep in stage.get("deps", [])]
    return [dep for dep in deps if dep.suffix == ".py" or (dep.is_dir() and (dep / "__init__.py").is_file())]


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


STAGES = pipeline_stages(ROOT)


@pytest.mark.parametrize("name", STAGES)
def test_every_file_a_stage_runs_is_in_its_deps(name):
    missing = sorted(str(path.relative_to(ROOT)) for path in files_run(stage_module(STAGES[name]))
                     if not covered(path, code_deps(STAGES[name])))
    assert not missing, f"{name} runs {missing}, which its deps in dvc.yaml do not list"


@pytest.mark.parametrize("name", STAGES)
def test_every_code_dep_of_a_stage_is_run_by_it(name):
    run = files_run(stage_module(STAGES[name]))
    unused = [str(dep.relative_to(ROOT)) for dep in code_deps(STAGES[name])
              if not any(path == dep or dep in path.parents for path in run)]
    assert not unused, f"{name} lists {unused} in its deps but never runs them: a change there would rerun it"


def test_the_walk_follows_imports_inside_functions_and_packages_above(tmp_path):
    """The walk itself: explain imports fashion_shap.engines, which imports deepshap inside it; the stage
    script's own package stages/__init__.py runs first."""
    run = files_run("stages.explain")
    assert {ROOT / "stages/__init__.py", ROOT / "fashion_shap/__init__.py", ROOT / "fashion_shap/engines.py",
            ROOT / "deepshap/__init__.py", ROOT / "deepshap/explainer.py"} <= run
    assert ROOT / "stages/train.py" not in run
