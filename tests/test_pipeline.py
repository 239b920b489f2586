"""The whole DVC pipeline, run by the real `dvc` on tiny data: what runs, what reruns, what is restored."""

import json

import yaml
from conftest import dvc, git, stages_run, write_params


def set_param(project, section, key, value):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    write_params(project, params)


def test_repro_builds_every_output_and_reports_metrics(built_project):
    assert dvc("status", "--json", cwd=built_project).stdout.strip() == "{}"
    metrics = json.loads(dvc("metrics", "show", "--json", cwd=built_project).stdout)
    files = metrics[""]["data"]
    assert set(files) == {
        "metrics/train/metrics.json", "metrics/evaluate.json", "metrics/explain.json", "metrics/trust.json",
    }
    assert "accuracy" in files["metrics/evaluate.json"]["data"]
    assert files["metrics/explain.json"]["data"]["additivity_error"] < 1e-5
    assert files["metrics/trust.json"]["data"]["images"] == 10
    for path in (
        "plots/shap.png", "plots/reference.png", "plots/confusion.csv", "models/model.weights.h5",
        "plots/trust/deletion.csv", "plots/trust/convergence.csv", "plots/trust/randomization.png",
    ):
        assert (built_project / path).is_file()


def test_epochs_rerun_only_what_uses_the_model(project):
    set_param(project, "train", "epochs", 2)
    assert set(stages_run(dvc("repro", cwd=project).stdout)) == {"train", "evaluate", "explain", "visualize", "trust"}


def test_background_size_reruns_only_background_and_after(project):
    set_param(project, "sample_background", "size", 10)
    assert set(stages_run(dvc("repro", cwd=project).stdout)) == {"sample_background", "explain", "visualize", "trust"}


def test_trust_params_rerun_only_trust(project):
    set_param(project, "trust", "deletion_steps", 4)
    assert stages_run(dvc("repro", cwd=project).stdout) == ["trust"]


def test_explain_params_do_not_rerun_trust(project):
    set_param(project, "explain", "chunk_size", 7)
    assert stages_run(dvc("repro", cwd=project).stdout) == ["explain", "visualize"]


def test_run_cache_gives_back_the_outputs_of_the_same_params(project):
    """The DVC pitfall: a restored stage must have been run with exactly these params."""
    before = (project / "data/background.npy").read_bytes()
    set_param(project, "sample_background", "size", 10)
    dvc("repro", cwd=project)
    assert (project / "data/background.npy").read_bytes() != before
    set_param(project, "sample_background", "size", 20)
    dvc("repro", cwd=project)
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
    assert dvc("status", "--json", cwd=project).stdout.strip() == "{}"
