"""The model section's options, alone and together, through every stage that reads the model, with the fast engine.

Two configurations that together take every option of params.yaml's model section (several conv
blocks and one; valid and same padding; kernel and pool sizes other than the lab's, odd and even,
pools that do not divide the image; several hidden Dense layers and none; dropout; batch
normalization), each through train, evaluate, explain, trust and mistakes on the tiny data, in this
process, with dvc.yaml's paths: every stage that reads the model (visualize reads explanations, of
the same shape for any model, and took 3 s of each run). The lab's own model (one block, one hidden
layer) runs in the other tests.
"""

import shlex
import shutil

import keras
import pytest
import yaml
from conftest import ROOT, declared_outs, pipeline_stages, write_params
from keras import layers

from fashion_shap.params import PipelineError
from fashion_shap.trust.rules import rule_explainers
from stages import evaluate, explain, mistakes, train, trust

CONFIGURATIONS = {
    # 28 -> 9 -> 3: a 3x3 pool leaves a row and a column out; an even kernel pads one more pixel after than before.
    "two-blocks-same-kernel-4-pool-3-batch-norm-two-hidden-dropout": {
        "conv_filters": [4, 8], "kernel_size": 4, "pool_size": 3, "padding": "same", "dense_units": [16, 8],
        "dropout": 0.5, "batch_norm": True,
    },
    # 28 -> 24 -> 4, the pool leaving four rows and columns out; straight to the softmax layer.
    "one-block-valid-kernel-5-pool-5-no-hidden": {
        "conv_filters": [4], "kernel_size": 5, "pool_size": 5, "padding": "valid", "dense_units": [],
        "dropout": 0.0, "batch_norm": False,
    },
}
# In the order dvc.yaml runs them; each after the stages whose outputs it reads.
STAGES = {"train": train, "evaluate": evaluate, "explain": explain, "trust": trust, "mistakes": mistakes}


def stage_args(stage: dict) -> list[str]:
    """Return the paths of a dvc.yaml stage's command, `python -m stages.<name> PATH ...`."""
    return shlex.split(stage["cmd"])[3:]


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_every_stage_runs_with_the_model_configuration(prepared, tmp_path, monkeypatch, name):
    for path in ("data/train", "data/test", "data/background.npy"):
        (shutil.copytree if (prepared / path).is_dir() else shutil.copy)(prepared / path, tmp_path / path)
    params = yaml.safe_load((prepared / "params.yaml").read_text())
    params["model"].update(CONFIGURATIONS[name])
    write_params(tmp_path, params)
    stages = pipeline_stages(ROOT)
    monkeypatch.chdir(tmp_path)
    for stage, module in STAGES.items():
        module.main(stage_args(stages[stage]))
        assert all((tmp_path / out).exists() for out in declared_outs(stages[stage])), stage


def test_a_model_the_fast_engine_cannot_take_is_one_line_in_trust():
    """The trust stage measures the fast engine's own rules: no explain.engine to fall back on."""
    inputs = keras.Input(shape=(28, 28, 1))
    hidden = layers.Dense(4, activation="tanh")(layers.Flatten()(inputs))  # no rule for tanh
    model = keras.Model(inputs, layers.Dense(10, activation="softmax")(hidden))
    message = r"cannot take this model \(.*'dense[_0-9]*' \(Dense\).*tanh.*the model section of params.yaml"
    with pytest.raises(PipelineError, match=message):
        rule_explainers(model, chunk_size=10)
