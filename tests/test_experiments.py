"""Experiments on the tiny pipeline with the real `dvc`: byte-for-byte reruns, branches, `dvc exp`, the queue, a remote."""

import json
import shutil
import time

import yaml
from conftest import dvc, git, stages_run
from test_pipeline import set_param

DATA_OUTS = {"data/raw", "data/train", "data/test", "data/background.npy"}
MODEL_OUTS = {
    "models/model.weights.h5", "metrics/train", "data/explanations", "plots/shap.png", "metrics/evaluate.json",
    "metrics/trust.json", "plots/trust",
}


def out_hashes(project) -> dict[str, str]:
    """Return {out path: md5} of every stage output recorded in dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_forced_rerun_gives_the_same_bytes_and_another_seed_does_not(project):
    before = out_hashes(project)
    assert len(before) == 14
    dvc("repro", "-f", cwd=project)
    assert out_hashes(project) == before

    set_param(project, "train", "seed", 7)
    dvc("repro", cwd=project)
    after = out_hashes(project)
    assert {path for path in before if after[path] != before[path]} >= MODEL_OUTS
    assert all(after[path] == before[path] for path in DATA_OUTS)


def test_branches_compare_params_metrics_and_plots(project):
    git("checkout", "-q", "-b", "other", cwd=project)
    set_param(project, "train", "epochs", 2)
    set_param(project, "sample_background", "size", 10)
    dvc("repro", cwd=project)
    git("add", "-A", cwd=project)
    git("commit", "-q", "-m", "two epochs, smaller background", cwd=project)

    params = json.loads(dvc("params", "diff", "main", "other", "--json", cwd=project).stdout)["params.yaml"]
    assert (params["train.epochs"]["old"], params["train.epochs"]["new"]) == (1, 2)
    assert (params["sample_background.size"]["old"], params["sample_background.size"]["new"]) == (20, 10)

    metrics = json.loads(dvc("metrics", "diff", "main", "other", "--json", cwd=project).stdout)
    assert metrics["metrics/evaluate.json"]["loss"]["new"] != metrics["metrics/evaluate.json"]["loss"]["old"]
    assert "additivity_error" in metrics["metrics/explain.json"]
    assert "step" in metrics["metrics/train/metrics.json"]  # two epochs log one more step

    dvc("plots", "diff", "main", "other", "-o", "compared", cwd=project)
    page = (project / "compared/index.html").read_text()
    assert page.count("shap.png") >= 2 and "main" in page and "other" in page


def experiments(project) -> list[dict]:
    """Return the experiments `dvc exp show --json` lists under the baseline (its first row is the workspace)."""
    workspace, baseline = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    return baseline["experiments"] or []


def test_exp_run_reruns_only_what_it_must_and_shows_beside_the_baseline(project):
    result = dvc("exp", "run", "-n", "small", "-S", "train.epochs=2", "-S", "sample_background.size=10", cwd=project)
    assert set(stages_run(result.stdout)) == {"train", "evaluate", "sample_background", "explain", "visualize", "trust"}
    (small,) = experiments(project)
    assert small["name"] == "small"
    params = small["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert params["train"]["epochs"] == 2 and params["sample_background"]["size"] == 10


def wait_for_queue(project, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc("queue", "status", cwd=project).stdout
        if "Queued" not in status and "Running" not in status:
            return
        time.sleep(3)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


def test_two_queued_experiments_run_in_parallel_and_both_show(project):
    for seed in (1, 2):
        dvc("exp", "run", "--queue", "-n", f"seed-{seed}", "-S", f"train.seed={seed}", cwd=project)
    dvc("queue", "start", "-j", "2", cwd=project)
    wait_for_queue(project, timeout=600)
    status = dvc("queue", "status", cwd=project).stdout
    assert status.count("Success") == 2, status
    assert sorted(exp["name"] for exp in experiments(project)) == ["seed-1", "seed-2"]
    dvc("queue", "stop", cwd=project, check=False)


def test_remote_push_and_pull_restore_every_output_bit_for_bit(project, tmp_path):
    dvc("remote", "add", "-d", "shared", str(tmp_path / "remote"), cwd=project)
    git("commit", "-q", "-am", "a shared remote", cwd=project)
    dvc("push", cwd=project)
    originals = {path: (project / path).read_bytes() for path in ("models/model.weights.h5", "data/background.npy")}
    originals["data/explanations/shap_values.npy"] = (project / "data/explanations/shap_values.npy").read_bytes()
    shutil.rmtree(project / ".dvc/cache")
    for path in ("models", "data"):
        shutil.rmtree(project / path)
    git("checkout", "--", ".", cwd=project)  # the .gitignore files DVC keeps beside the outputs
    dvc("pull", cwd=project)
    for path, content in originals.items():
        assert (project / path).read_bytes() == content
    assert dvc("status", "--json", cwd=project).stdout.strip() == "{}"
