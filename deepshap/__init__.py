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
"""

import os

# OpenBLAS's threads spin for a while after each matrix product, keeping the cores from the engine's
# compiled loop and TensorFlow in between (measured: that loop ran 2.4x slower). Read once, when
# NumPy loads OpenBLAS, so it only helps when this package is imported before NumPy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from deepshap.cache import use_shared_cache  # noqa: E402

use_shared_cache()  # before the compiled loops are defined

from deepshap.explainer import OUTPUTS, SOFTMAX_RULES, Explainer, UnsupportedModelError  # noqa: E402
from deepshap.reference import shap_reference  # noqa: E402

__all__ = ["OUTPUTS", "SOFTMAX_RULES", "Explainer", "UnsupportedModelError", "shap_reference"]
