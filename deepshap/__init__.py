"""deepshap: exact DeepSHAP values of Keras CNNs, fast and in flat memory.

The engine behind the pipeline's explain, trust and mistakes stages, with no pipeline code in it:
it takes a Keras model and arrays, and returns arrays.

    from deepshap import Explainer
    explainer = Explainer(model, output="probability", softmax_rule="shap", chunk_size=100)
    values = explainer.shap_values(images, background)  # (images, *image shape, classes)

- `Explainer`: shap.DeepExplainer's values (its DeepLIFT rescale rules), computed for all images and
  classes at once and streamed over the background; or, with `softmax_rule="shapley"`, the exact
  Shapley values of the softmax over the logits as the head's rule.
- `shap_reference`: shap.DeepExplainer itself, the reference the engine is tested against.
- `RULES`, `ACTIVATIONS`, `Rule`, `register_rule`: the table from Keras layer kind (and activation
  name) to its backward rule, which a caller can extend (deepshap.rules); `CHECKS`: the supported
  configurations of each kind (deepshap.support); `FUSED`: the compiled loops and the runs of rules
  they replace (deepshap.fused).

The names above load on first use (PEP 562), so that a module of the package that needs no
TensorFlow can be imported where TensorFlow is not installed.
"""

import importlib

# No import-time setting here: importing deepshap.accelerated must need neither TensorFlow nor numba.
# (A program that runs the CPU engine should also set OPENBLAS_THREAD_TIMEOUT=4 before NumPy loads:
# OpenBLAS's threads otherwise spin after each product and slow the compiled loops 2.4x, measured;
# the pipeline sets it in fashion_shap/__init__.py. numba's cache folder is set by deepshap.cache.)

# Public name -> the module that defines it.
_EXPORTS = {
    "OUTPUTS": "deepshap.options", "SOFTMAX_RULES": "deepshap.explainer", "Explainer": "deepshap.explainer",
    "UnsupportedModelError": "deepshap.errors", "shap_reference": "deepshap.reference",
    "RULES": "deepshap.rules", "ACTIVATIONS": "deepshap.rules", "Rule": "deepshap.rules",
    "register_rule": "deepshap.rules", "CHECKS": "deepshap.support", "FUSED": "deepshap.fused",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deepshap' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
