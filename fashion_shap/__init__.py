"""fashion_shap: the code the pipeline's stages share; each stage is a thin script in stages/.

- params: params.yaml's values, checked, and the one-line errors a user can act on.
- data: the IDX files, the preprocessed splits and the class names.
- files: writes that never leave a half-written output (write to a temporary path, then rename).
- model: the CNN of params.yaml's model section, and its weights file.
- engines: the one place that picks an explanation engine (explain.engine).
- readings: what the lab reads off SHAP values.
- figures: the lab's colours and overlay, and saving a figure.
- trust, mistakes: the checks of the trust stage and the parts of the mistakes stage, one module each.

The attribution rules live apart, in the deepshap package, which knows nothing of DVC or files.
"""

import os

# The pipeline's import-time settings, here alone, before any stage loads NumPy, TensorFlow or
# matplotlib. OpenBLAS's threads spin for a while after each matrix product, keeping the cores from
# the engine's compiled loop and TensorFlow in between (measured: that loop ran 2.4x slower); read
# once, when NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# TensorFlow's C++ start-up chatter (oneDNN, CPU features) is noise in a pipeline's log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Figures go to files only: no screen, whatever the user's matplotlib default.
os.environ.setdefault("MPLBACKEND", "Agg")
