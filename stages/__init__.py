"""The pipeline's stages, one script each, and the code they share."""

import os

# OpenBLAS's threads spin for a while after each matrix product, keeping the cores from the
# explain stage's compiled loop and TensorFlow in between (measured: that loop ran 2.4x slower).
# Read once, when NumPy loads OpenBLAS: importing any stage runs this first.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# TensorFlow's C++ start-up chatter (oneDNN, CPU features) is noise in a pipeline's log; it is read
# when TensorFlow loads, which a stage may trigger through keras or shap before stages.model.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
