"""Experiments on the tiny pipeline with the real `dvc`: the README's compare loop (queue, show, diff, branch),
the model as an artifact, a remote."""

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from conftest import declared_outs, dvc, dvc_status, git, pipeline_stages, stages_run

pytestmark = pytest.mark.slow

# The README's loop, on the tiny data: an epochs change (train and all after it) and the Shapley rule (explain
# and what reads it), two at a time. Two experiments are all the checks below need (a third, a smaller
# background, cost some 70 s of the suite's CPU; tests/test_pipeline.py checks that param's reach).
EXPERIMENTS = {"epochs-2": "train.epochs=2", "shapley": "explain.softmax_rule=shapley"}
# The README's compare command, and the headline metrics it must show whether or not they changed.
COMPARE = ["exp", "show", "--no-pager", "--only-changed", "--drop", "Created|State|Executor|data/|models/",
           "--keep", "accuracy|loss|diagonal|additivity_ppm|explain_s|.*\\.l2|mistakes$"]
HEADLINE = ["accuracy", "loss", "additivity_ppm", "diagonal", "explain_s", "logit.l2", "shap.l2", "shapley.l2",
            "mistakes"]  # as DVC orders them: by file, in dvc.yaml's order, each file's keys sorted


class QueueRun(NamedTuple):
    project: Path
    status: dict[str, str]  # by experiment name, once the queue is done
    running_at_once: int  # experiments running when the last one left the queue
    logs: dict[str, str]  # by experiment name, what `dvc queue logs` shows


def queue_status(project) -> dict[str, str]:
    """Return {experiment name: Queued, Running, Success or Failed} from `dvc queue status`."""
    lines = dvc("queue", "status", cwd=project).stdout.splitlines()
    # A table "Task  Name  Created  Status", one row per experiment, then a blank line and the workers.
    rows = [line.split() for line in lines[1 : lines.index("")]] if lines[0].startswith("Task") else []
    return {row[1]: row[-1] for row in rows}


def wait_while(project, statuses: set[str], timeout: float = 600) -> dict[str, str]:
    """Poll `dvc queue status` until no experiment has one of statuses; return the last status."""
    deadline = time.monotonic() + timeout
    status = queue_status(project)
    while statuses & set(status.values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue was still {statuses} after {timeout} s: {status}")
        time.sleep(1)
        status = queue_status(project)
    return status


def start_queue(project, workers: int) -> None:
    """Run `dvc queue start`, its output to a file: the workers it leaves running inherit the output,
    and a pipe would keep the call waiting until they end."""
    with open(project.parent / "queue-start.log", "w") as log:
        subprocess.run(["dvc", "queue", "start", "-j", str(workers)], cwd=project, stdout=log, stderr=log, check=True)


@pytest.fixture(scope="module")
def queued(tmp_path_factory, built_project) -> Iterator[QueueRun]:
    """A copy of the built project where the EXPERIMENTS ran from the queue, two at a time."""
    project = tmp_path_factory.mktemp("queued") / "project"
    shutil.copytree(built_project, project, symlinks=True)
    for name, change in EXPERIMENTS.items():
        dvc("exp", "run", "--queue", "-n", name, "-S", change, cwd=project)
    try:
        start_queue(project, workers=2)
        running_at_once = list(wait_while(project, {"Queued"}).values()).count("Running")
        # --follow returns when the experiment's run ends: waiting costs no polling.
        logs = {name: dvc("queue", "logs", "--follow", name, cwd=project).stdout for name in EXPERIMENTS}
        yield QueueRun(project, wait_while(project, {"Queued", "Running"}), running_at_once, logs)
    finally:
        dvc("queue", "stop", "--kill", cwd=project, check=False)  # no worker outlives a failed test


def experiments(project) -> dict[str, dict]:
    """Return {name: data} of the experiments `dvc exp show --json` lists under the baseline, and
    "baseline" itself (the first row is the workspace)."""
    _workspace, baseline = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    found = {exp["name"]: exp["revs"][0]["data"] for exp in baseline["experiments"] or []}
    return {"baseline": baseline["data"], **found}


def test_queued_experiments_run_two_at_a_time_and_each_carries_its_headline_and_time(queued):
    assert queued.status == dict.fromkeys(EXPERIMENTS, "Success")
    assert queued.running_at_once == 2
    shown = experiments(queued.project)
    assert set(shown) == {"baseline", *EXPERIMENTS}
    assert shown["epochs-2"]["params"]["params.yaml"]["data"]["train"]["epochs"] == 2
    assert shown["shapley"]["params"]["params.yaml"]["data"]["explain"]["softmax_rule"] == "shapley"
    times = {}
    for name, data in shown.items():
        metrics = {path: content["data"] for path, content in data["metrics"].items()}
        assert sum(len(leaves(content)) for content in metrics.values()) <= 20
        times[name] = metrics["metrics/timing.json"]["explain_s"]
    assert all(seconds > 0 for seconds in times.values())
    # Each experiment's row carries its own run's time, the one its explain stage printed (not the baseline's,
    # which the tiny data's runs can equal to the tenth of a second).
    for name in EXPERIMENTS:
        assert times[name] == float(re.search(r"explain: ([\d.]+) s;", queued.logs[name]).group(1))


def leaves(data: dict) -> list:
    return [leaf for value in data.values() for leaf in (leaves(value) if isinstance(value, dict) else [value])]


def test_the_compare_command_shows_every_changed_param_and_headline_metric_in_200_columns(queued):
    result = subprocess.run(["dvc", *COMPARE], cwd=queued.project, capture_output=True, text=True, check=True,
                            env={**os.environ, "COLUMNS": "200"})
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 200 and "…" not in result.stdout, result.stdout  # no column cut
    header = lines[1].split()
    assert header[: 1 + len(HEADLINE)] == ["Experiment", *HEADLINE]
    assert sorted(header[1 + len(HEADLINE) :]) == ["explain.softmax_rule", "train.epochs"]
    rows = [line.split() for line in lines[3:-1]]  # between the header's rule and the closing one
    assert len(rows) == 2 + len(EXPERIMENTS)  # the workspace, main and the experiments
    changed = len(EXPERIMENTS)  # param columns after the metrics, one per experiment's change
    for row in rows:
        assert all(float(number) >= 0 for number in row[-len(HEADLINE) - changed : -changed])  # not "-" or "!"


@pytest.mark.parametrize(
    ("name", "reruns"),
    [
        ("epochs-2", {"train", "evaluate", "explain", "visualize", "trust", "mistakes"}),
        ("shapley", {"explain", "visualize", "mistakes"}),
    ],
)
def test_an_experiment_runs_exactly_the_stages_its_param_reaches(queued, name, reruns):
    assert set(stages_run(queued.logs[name])) == reruns


def test_more_epochs_change_the_model_and_what_reads_it_but_not_the_data(queued):
    shown = experiments(queued.project)
    before, after = (
        {path: out["hash"] for path, out in shown[name]["outs"].items()} for name in ("baseline", "epochs-2")
    )
    stages = pipeline_stages(queued.project)
    data = [out for name in ("fetch", "preprocess", "sample_background") for out in declared_outs(stages[name])]
    assert all(after[path] == before[path] for path in data)
    # The model, and what is computed from it; not plots/reference.png (training images only), nor the
    # confusion matrix, which can be the same for two models that both classify every test image right.
    for path in ("models/model.weights.h5", "metrics/train", "reports/evaluate.json", "data/explanations",
                 "plots/shap.png", "reports/trust.json", "plots/trust"):
        assert after[path] != before[path], path


def test_two_experiments_diff_and_the_best_becomes_a_branch_to_compare_with_main(queued):
    project = queued.project
    diff = json.loads(dvc("exp", "diff", "shapley", "epochs-2", "--json", cwd=project).stdout)
    assert {"train.epochs", "explain.softmax_rule"} <= set(diff["params"]["params.yaml"])
    assert "loss" in diff["metrics"]["metrics/evaluate.json"]  # `dvc exp diff` lists what changed

    dvc("exp", "branch", "epochs-2", "other", cwd=project)
    params = json.loads(dvc("params", "diff", "main", "other", "--json", cwd=project).stdout)["params.yaml"]
    assert set(params) == {"train.epochs"}
    assert (params["train.epochs"]["old"], params["train.epochs"]["new"]) == (1, 2)

    # --all: the explanation's time too when both revisions took the same tenths of a second (the tiny data's
    # explanation takes a few tenths: without it, the timing file was missing from the diff now and then).
    metrics = json.loads(dvc("metrics", "diff", "main", "other", "--all", "--json", cwd=project).stdout)
    assert metrics["metrics/evaluate.json"]["loss"]["new"] != metrics["metrics/evaluate.json"]["loss"]["old"]
    assert "explain_s" in metrics["metrics/timing.json"]

    dvc("plots", "diff", "main", "other", "-o", "compared", cwd=project)
    page = (project / "compared/index.html").read_text()
    figures = {}
    for revision in ("main", "other"):
        # Each revision's figure is copied beside the page under its revision's name, and shown.
        assert f'<img src="static/{revision}_plots_shap.png">' in page
        figures[revision] = (project / f"compared/static/{revision}_plots_shap.png").read_bytes()
        assert f'"rev": "{revision}"' in page  # its rows in the data of the Vega plots
    assert figures["main"] == (project / "plots/shap.png").read_bytes()  # the workspace is main
    assert figures["other"] != figures["main"]


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
    assert dvc_status(project) == {}


def test_the_model_is_an_artifact_that_dvc_artifacts_get_fetches_from_a_clone(project, tmp_path):
    dvc("remote", "add", "-d", "shared", str(tmp_path / "remote"), cwd=project)
    git("commit", "-q", "-am", "a shared remote", cwd=project)
    dvc("push", cwd=project)
    # A model registry's version of the artifact: a git tag <name>@v<semver>, as `gto register` makes.
    git("tag", "-a", "fashion-cnn@v1.0.0", "-m", "fashion-cnn v1.0.0", cwd=project)
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    dvc("artifacts", "get", str(project), "fashion-cnn", "-o", "model.weights.h5", cwd=fetched)
    assert (fetched / "model.weights.h5").read_bytes() == (project / "models/model.weights.h5").read_bytes()
    declared = yaml.safe_load((project / "dvc.yaml").read_text())["artifacts"]["fashion-cnn"]
    assert declared["type"] == "model" and "conv2d-32-3x3-relu" in declared["labels"]


def test_a_plain_exp_run_with_a_changed_param_runs_end_to_end_and_shows(project):
    result = dvc("exp", "run", "-n", "top-pairs-2", "-S", "mistakes.top_pairs=2", cwd=project)
    assert stages_run(result.stdout) == ["mistakes"]
    shown = experiments(project)
    assert shown["top-pairs-2"]["params"]["params.yaml"]["data"]["mistakes"]["top_pairs"] == 2
