"""Train the CNN params.yaml's model section describes, validating on the test set after every epoch.

Reads: the train and test directories written by preprocess.
Writes: the model's weights (.weights.h5, whose bytes depend only on the weights, unlike a
.keras file that embeds its save date) and a DVCLive directory with per-epoch metrics.
"""

import keras
from dvclive import Live
from dvclive.keras import DVCLiveCallback

from fashion_shap.data import load_split
from fashion_shap.files import atomic_path
from fashion_shap.model import build_model, read_architecture, save_weights, set_seed
from fashion_shap.params import is_terminal, parse_paths, read_params, require_positive, run

# Batches per call into TensorFlow's compiled training step: one call per batch spends more time in
# Python and Keras' callbacks than in the lab's small model. The arithmetic, and so the weights'
# bytes, is the same for any value (tests/test_train.py).
STEPS_PER_EXECUTION = 32


def compile_model(architecture: dict, learning_rate: float, steps_per_execution: int = STEPS_PER_EXECUTION
                  ) -> keras.Model:
    model = build_model(**architecture)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
    )
    return model


def main(argv: list[str] | None = None) -> None:
    params = read_params("train", {"seed": int, "epochs": int, "batch_size": int, "learning_rate": float})
    for key in ("epochs", "batch_size", "learning_rate"):
        require_positive(f"train.{key}", params[key])
    architecture = read_architecture()
    train_dir, test_dir, model_path, live_dir = parse_paths(
        "train", __doc__, ["train_dir", "test_dir", "model", "live_dir"], argv
    )

    x_train, y_train = load_split(train_dir)
    x_test, y_test = load_split(test_dir)
    print(f"train: x_train {x_train.shape}, x_test {x_test.shape}, {params['epochs']} epochs")

    # The weights file records layer names, which count up over the models a process builds (dense,
    # dense_1, ...): from a fresh Keras session they are a new process's, whatever ran before.
    keras.backend.clear_session()
    set_seed(params["seed"])
    model = compile_model(architecture, params["learning_rate"])
    with atomic_path(live_dir) as live_temporary, atomic_path(model_path) as model_temporary:
        # dvc.yaml is kept by hand and experiments are made by `dvc exp run`, so DVCLive
        # must neither rewrite dvc.yaml nor create experiments of its own.
        with Live(str(live_temporary), dvcyaml=False, save_dvc_exp=False) as live:
            model.fit(
                x_train,
                y_train,
                batch_size=params["batch_size"],
                epochs=params["epochs"],
                validation_data=(x_test, y_test),
                callbacks=[DVCLiveCallback(live=live)],
                # A progress bar per epoch on a terminal, one line per epoch in a CI log.
                verbose=1 if is_terminal() else 2,
            )
        save_weights(model, model_temporary, architecture)


if __name__ == "__main__":
    run(main)
