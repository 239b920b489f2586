"""The whole DVC pipeline, run by the real `dvc` on tiny data: what runs, what reruns, what is restored.

A param's reach is checked without running anything: `dvc status` names the stages a change
invalidates directly, and dvc.yaml's graph names what reads their outputs. That the stages
downstream really rerun when those outputs change is shown by an experiment in
test_experiments.py (another train.seed), which runs them.
"""

import importlib
import json
import shlex
import shutil

import pytest
from conftest import declared_outs, dvc, dvc_status, git, lock_hashes, pipeline_stages, set_param, stages_run

pytestmark = pytest.mark.slow


def downstream(stages: dict[str, dict], stage: str) -> set[str]:
    """Return the stages that read, directly or through others, an output of stage."""
    found: set[str] = set()
    outs = set(declared_outs(stages[stage]))
    for name, other in stages.items():
        if any(dep == out or dep.startswith(f"{out}/") for dep in other.get("deps", []) for out in outs):
            found |= {name} | downstream(stages, name)
    return found


def leaves(data: dict) -> dict[str, object]:
    """Return the leaves of nested JSON data by their dotted path, as `dvc exp show` names its columns."""
    found = {}
    for key, value in data.items():
        found.update({f"{key}.{path}": leaf for path, leaf in leaves(value).items()} if isinstance(value, dict)
                     else {key: value})
    return found


def test_repro_builds_every_output_and_reports_a_few_headline_metrics(project):
    assert dvc_status(project) == {}
    metrics = json.loads(dvc("metrics", "show", "--json", cwd=project).stdout)
    files = {path: leaves(content["data"]) for path, content in metrics[""]["data"].items()}
    assert set(files) == {
        "metrics/evaluate.json", "metrics/explain.json", "metrics/timing.json", "metrics/trust.json",
        "metrics/mistakes.json",
    }
    # The numbers a person compares, each named by its own leaf, each a number; the detail is in reports/.
    headline = {name: value for file in files.values() for name, value in file.items()}
    assert sum(len(file) for file in files.values()) == len(headline) <= 20
    assert set(headline) == {"accuracy", "loss", "diagonal", "additivity_ppm", "explain_s", "shap.l2", "shapley.l2",
                             "logit.l2", "mistakes"}
    assert all(isinstance(value, (int, float)) for value in headline.values())
    assert headline["explain_s"] > 0 and 0 <= headline["additivity_ppm"] < 10  # ppm: DVC prints it, not 0.0
    # The time is a metric, not an output: no stage declares it, so its bytes are free to change.
    assert all("metrics/timing.json" not in declared_outs(stage) for stage in pipeline_stages(project).values())
    report = json.loads((project / "reports/trust.json").read_text())
    assert report["images"] == 10 and set(report["deletion"]) == {"auc_random_order", "shap", "shapley", "logit"}
    for stage in pipeline_stages(project).values():
        for path in declared_outs(stage):
            assert (project / path).exists(), path


def stage_command(stage: dict) -> tuple[str, list[str]]:
    """Return (module, arguments) of a stage's cmd, which is `python -m stages.<name> <paths>`."""
    words = shlex.split(stage["cmd"])
    assert words[:2] == ["python", "-m"], stage["cmd"]
    return words[2], words[3:]


def test_every_stage_run_again_in_another_process_writes_the_same_bytes(project, monkeypatch):
    """`dvc repro` ran each stage in a fresh process. Here every output is deleted and each stage runs
    again, in dvc.yaml's order, in this process (where TensorFlow, numba and other tests ran before):
    every declared output must hash as dvc.lock recorded it."""
    stages = pipeline_stages(project)
    outs = [project / path for stage in stages.values() for path in declared_outs(stage)]
    assert {str(path.relative_to(project)) for path in outs} == set(lock_hashes(project))
    for path in outs:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    monkeypatch.chdir(project)  # where the stages read params.yaml
    for stage in stages.values():
        module, arguments = stage_command(stage)
        importlib.import_module(module).main(arguments)
    assert all(path.exists() for path in outs)
    assert dvc_status(project) == {}  # dvc hashes every output as dvc.lock has it


@pytest.mark.parametrize(
    ("section", "key", "value", "reruns"),
    [
        ("train", "epochs", 2, {"train", "evaluate", "explain", "visualize", "trust", "mistakes"}),
        # Trust declares explain.engine alone of the explain params (it measures every rule itself).
        ("explain", "chunk_size", 7, {"explain", "visualize"}),
        ("sample_background", "size", 10, {"sample_background", "explain", "visualize", "trust", "mistakes"}),
        ("trust", "deletion_steps", 4, {"trust"}),
        ("mistakes", "top_pairs", 2, {"mistakes"}),
    ],
)
def test_a_param_invalidates_its_stage_alone_and_reaches_what_reads_its_outputs(project, section, key, value, reruns):
    """The README's promise of what a param reruns: the param is declared by its own stage only, and
    the stages after it in dvc.yaml's graph are the rest of the list."""
    set_param(project, section, key, value)
    assert dvc_status(project) == {section: [{"changed deps": {"params.yaml": {f"{section}.{key}": "modified"}}}]}
    assert {section} | downstream(pipeline_stages(project), section) == reruns


def test_the_head_rule_reaches_explain_and_mistakes_but_not_trust_and_the_engine_all_three(project):
    """Trust measures every rule itself, with the engine the explain section names; the mistakes stage explains
    with the explain stage's engine and rule."""
    set_param(project, "explain", "softmax_rule", "shapley")
    assert set(dvc_status(project)) == {"explain", "mistakes"}
    set_param(project, "explain", "engine", "accelerated")
    assert set(dvc_status(project)) == {"explain", "trust", "mistakes"}


def test_run_cache_gives_back_the_outputs_of_the_same_params(project):
    """The DVC pitfall: a restored stage must have been run with exactly these params."""
    before = (project / "data/background.npy").read_bytes()
    set_param(project, "sample_background", "size", 10)
    assert stages_run(dvc("repro", "--single-item", "sample_background", cwd=project).stdout) == ["sample_background"]
    assert (project / "data/background.npy").read_bytes() != before
    set_param(project, "sample_background", "size", 20)
    assert stages_run(dvc("repro", "--single-item", "sample_background", cwd=project).stdout) == []  # restored
    assert (project / "data/background.npy").read_bytes() == before


def test_failed_stage_reports_one_line_and_checkout_restores_the_last_good_outputs(project):
    model = (project / "models/model.weights.h5").read_bytes()
    set_param(project, "train", "epochs", 0)
    result = dvc("repro", cwd=project, check=False)
    assert result.returncode != 0
    assert "error: params.yaml: train.epochs must be positive, got 0" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    git("checkout", "params.yaml", cwd=project)
    dvc("checkout", cwd=project)
    assert (project / "models/model.weights.h5").read_bytes() == model
    assert dvc_status(project) == {}


def test_a_fresh_clone_reproduces_everything_and_leaves_git_status_clean(built_project, tmp_path):
    """What a new user does: clone, `dvc repro` (no DVC remote: the cached outputs are made again), and
    find the working tree as committed. The time that explain records is in git, so explain must be
    skipped: its outputs are in git and its inputs come out byte for byte the same."""
    clone = tmp_path / "clone"
    git("clone", "-q", str(built_project), str(clone), cwd=tmp_path)
    ran = stages_run(dvc("repro", cwd=clone).stdout)
    assert "train" in ran and "explain" not in ran
    assert git("status", "--porcelain", cwd=clone).stdout == ""
    assert dvc_status(clone) == {}
