"""The trust stage on tiny data: its params, outputs and one-line errors (each check has its own test file)."""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    assert_one_line_error,
    declared_outs,
    dvc_status,
    pipeline_stages,
    run_stage,
    set_param,
    write_params,
)

from fashion_shap.engines import say_where
from fashion_shap.params import PipelineError
from fashion_shap.trust.rules import RULES
from stages import trust
from stages.trust import check_pool

OUTPUTS = ["trust.json", "report.json", "deletion.csv", "convergence.csv", "randomization.png", "backgrounds.png"]


@pytest.mark.parametrize("change, message", [
    ({"convergence_sizes": [60]}, "trust.convergence_sizes holds 60"),
    ({"convergence_sizes": [20]}, "trust.convergence_sizes needs a size other than the background's 20"),
    ({"readings_backgrounds": 4, "readings_size": 30}, "trust.readings_backgrounds x trust.readings_size is 120"),
    # Not cut to the background's 20 images without a word.
    ({"diagnostics_size": 21}, "trust.diagnostics_size is 21, but the background has only 20 images"),
    ({"randomization_background": 1000}, "trust.randomization_background is 1000, but the background has only 20"),
])
def test_pool_or_background_too_small_for_a_size_is_named(change, message):
    params = {"convergence_sizes": [5], "readings_backgrounds": 2, "readings_size": 10, "diagnostics_size": 20,
              "randomization_background": 20}
    check_pool(params, 100, 20, 20)  # a pool of 100 outside a background of 20 is enough for these
    with pytest.raises(PipelineError, match=message):
        check_pool(params | change, 100, 20, 20)


def trust_params(prepared, tmp_path, **changes) -> None:
    """Write the prepared directory's params.yaml into tmp_path with a small trust section and these changes."""
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["trust"].update(diagnostics_size=5, readings_backgrounds=2, readings_size=10, **changes)
    write_params(tmp_path, params)


def stage_args(prepared, tmp_path) -> list[str]:
    inputs = ("models/model.weights.h5", "data/background.npy", "data/train", "data/test")
    return [str(prepared / path) for path in inputs] + [str(tmp_path / name) for name in OUTPUTS]


def built_outputs(project) -> dict[str, Path]:
    """Return the trust stage's outputs in a project, by the names of OUTPUTS: the paths of its dvc.yaml command."""
    paths = shlex.split(pipeline_stages(project)["trust"]["cmd"])[-len(OUTPUTS):]
    return {name: project / path for name, path in zip(OUTPUTS, paths, strict=True)}


@pytest.mark.slow
def test_stage_writes_metrics_curves_and_figures(built_project):
    """What the stage wrote when `dvc repro` ran its command in the built project, with the tiny params
    (tests/conftest.py), which the numbers below follow: a background of 20, convergence size 5, 5
    diagnostic references, 7 deletion steps."""
    params = yaml.safe_load((built_project / "params.yaml").read_text())["trust"]
    assert (params["convergence_sizes"], params["diagnostics_size"], params["deletion_steps"]) == ([5], 5, 7)
    outputs = built_outputs(built_project)
    metrics = json.loads(outputs["report.json"].read_text())
    # The headline, for `dvc exp show`: each rule's distance between maps from disjoint backgrounds.
    headline = json.loads(outputs["trust.json"].read_text())
    assert headline == {name: {"l2": round(metrics["convergence"][name]["relative_l2"], 4)} for name in RULES}
    assert metrics["images"] == 10 and metrics["convergence"]["images"] == 10
    assert metrics["convergence"]["compared_size"] == 20 and metrics["diagnostics"]["references"] == 5
    for name in RULES:
        assert metrics["completeness"][name]["max_additivity_error"] < 1e-4
        assert metrics["convergence"][name]["relative_l2"] > 0 and np.isfinite(metrics["convergence"][name]["slope"])
        assert 0 < metrics["diagnostics"][name]["top1_share"] <= metrics["diagnostics"][name]["top5_share"] <= 1
        assert set(metrics["readings"][name]) == {"diagonal", "coat", "sleeves"}
        assert 0 <= metrics["readings"][name]["coat"]["held"] <= 2
    assert set(metrics["randomization"]["rank_correlation"]) == {"top1_layers", "top2_layers", "top3_layers"}
    header, *rows = outputs["deletion.csv"].read_text().splitlines()
    assert header.split(",") == ["fraction_removed", "random_order"] + [
        f"{name}{order}" for name in RULES for order in ("_order", "_reverse_order")]
    assert len(rows) == 8 and rows[0].startswith("0,") and rows[-1].startswith("1,")
    convergence = np.loadtxt(outputs["convergence.csv"], delimiter=",", skiprows=1)
    assert convergence[:, 0].tolist() == [5, 20] and convergence.shape[1] == 1 + 2 * len(RULES)
    for name in ("randomization.png", "backgrounds.png"):
        assert outputs[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_too_large_convergence_size_is_a_one_line_error_that_writes_nothing(prepared, tmp_path):
    trust_params(prepared, tmp_path, convergence_sizes=[100])
    result = run_stage("trust", *stage_args(prepared, tmp_path), cwd=tmp_path, check=False)
    assert_one_line_error(result, "trust.convergence_sizes holds 100", "lower it in params.yaml")
    assert not any((tmp_path / name).exists() for name in OUTPUTS)


@pytest.mark.slow
@pytest.mark.parametrize(("key", "value"), [
    ("diagnostics_size", 4), ("readings_backgrounds", 3), ("readings_size", 8), ("sleeves_blank_below", 0.2),
    ("sleeves_pullover_above", 0.4),
])
def test_new_trust_params_rerun_trust_alone(project, key, value):
    """`dvc status` names the stages a change invalidates directly; no stage reads what trust writes."""
    set_param(project, "trust", key, value)
    assert dvc_status(project) == {"trust": [{"changed deps": {"params.yaml": {f"trust.{key}": "modified"}}}]}
    stages = pipeline_stages(project)
    trust_outs = declared_outs(stages["trust"])
    assert not any(dep.startswith(out) for stage in stages.values() for dep in stage["deps"] for out in trust_outs)


@pytest.mark.slow
def test_stage_measures_the_rules_with_the_accelerated_engine_when_explain_names_it(prepared, tmp_path, monkeypatch,
                                                                                   capsys):
    """In this process, where TensorFlow is loaded already, and maybe JAX (measured: 7 s, where a process of its own
    took 12-14 s); the command line's one-line errors are the other tests'."""
    trust_params(prepared, tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["explain"]["engine"] = "accelerated"
    write_params(tmp_path, params)
    monkeypatch.chdir(tmp_path)  # where the stage reads params.yaml
    say_where.cache_clear()  # said once per process: maybe already, by another test in this one
    trust.main(stage_args(prepared, tmp_path))
    assert capsys.readouterr().out.count("JAX finds no GPU or TPU here") == 1  # said once, on this machine's CPU
    report = json.loads((tmp_path / "report.json").read_text())
    for name in RULES:
        assert report["completeness"][name]["max_additivity_error"] < 1e-4
        assert report["convergence"][name]["relative_l2"] > 0
    assert set(report["randomization"]["rank_correlation"]) == {"top1_layers", "top2_layers", "top3_layers"}
