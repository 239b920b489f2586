"""Explainer: shap.DeepExplainer's values for all images and classes at once, the background streamed."""

from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from deepshap import head
from deepshap.kernels import pool_conv_backward
from deepshap.network import DenseReluCnn, UnsupportedModelError

OUTPUTS = ("probability", "logit")
SOFTMAX_RULES = {"shap": head.shap_softmax, "shapley": head.shapley_softmax}


class Explainer:
    """DeepSHAP values of a supported Keras model.

    output: "probability" explains the softmax's outputs, with the head rule softmax_rule ("shap":
    shap.DeepExplainer's, value for value; "shapley": the exact Shapley values of the softmax over the
    logits); "logit" explains the logits, the scores before the softmax.
    chunk_size: background images per step; memory grows with it, not with the background.

    Deterministic: the same model, images and background give the same bytes on any CPU, thread
    count, BLAS kernel and chunk size is not promised (it changes the order of the sums).
    """

    def __init__(self, model: keras.Model, output: str = "probability", softmax_rule: str = "shap",
                 chunk_size: int = 100):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if softmax_rule not in SOFTMAX_RULES:
            raise ValueError(f"softmax_rule must be one of {', '.join(SOFTMAX_RULES)}, got {softmax_rule!r}")
        self.network = DenseReluCnn(model)
        last = model.layers[-1]
        if output == "probability" and last.activation is not keras.activations.softmax:
            raise UnsupportedModelError(f"output 'probability' needs a softmax output layer; '{last.name}' has none")
        self.head = head.linear if output == "logit" else SOFTMAX_RULES[softmax_rule]
        self.output = output
        self.chunk_size = chunk_size
        self.num_classes = self.network.num_classes

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the explained outputs of images, (images, classes) float32: probabilities or logits."""
        outputs = []
        for start in range(0, len(images), self.chunk_size):
            logits = self.network.forward(np.asarray(images[start : start + self.chunk_size], dtype=np.float32))["logits"]
            outputs.append(logits if self.output == "logit" else tf.nn.softmax(logits).numpy())
        return np.concatenate(outputs)

    def expected_value(self, background: np.ndarray) -> np.ndarray:
        """Return the mean explained output over the background, E[f(background)], (classes,) float64."""
        total = np.zeros(self.num_classes)
        for start in range(0, len(background), self.chunk_size):
            total += self.predict(background[start : start + self.chunk_size]).astype(np.float64).sum(axis=0)
        return total / len(background)

    def chunks(self, background: np.ndarray) -> Iterator[tuple[np.ndarray, dict]]:
        """Yield (references, their forward values) a chunk at a time."""
        for start in range(0, len(background), self.chunk_size):
            references = np.ascontiguousarray(background[start : start + self.chunk_size], dtype=np.float32)
            yield references, self.network.forward(references)

    def head_multipliers(self, images: np.ndarray, references: np.ndarray, classes: np.ndarray | None = None
                         ) -> np.ndarray:
        """Return the head rule's multipliers w.r.t. the logits, (images, references, classes, logits) float64."""
        image_logits = self.network.forward(np.asarray(images, dtype=np.float32))["logits"]
        reference_logits = self.network.forward(np.asarray(references, dtype=np.float32))["logits"]
        return select(self.head(image_logits, reference_logits), classes)

    def add_chunk(self, totals: np.ndarray, images: np.ndarray, x: dict, references: np.ndarray, r: dict,
                  classes: np.ndarray | None) -> None:
        """Add one chunk's sum of multiplier * (image - reference) to totals (images, rows, columns, channels, classes)."""
        network = self.network
        grad_logits = select(self.head(x["logits"], r["logits"]), classes)  # (images, refs, classes, logits)
        dense_rule = relu_multipliers(x["dense_in"][:, np.newaxis], r["dense_in"])  # (images, refs, units)
        pooled_grad = np.empty(grad_logits.shape[:3] + (network.dense_kernel_t.shape[1],))
        for image, (grad, rule) in enumerate(zip(grad_logits, dense_rule)):
            # Per image, so that an image's values do not depend on the others explained with it (any
            # shard of images gives the same bytes); units dead against every reference add nothing.
            alive = np.flatnonzero(rule.any(axis=0))
            grad_dense = (grad @ network.output_kernel_t[:, alive]) * rule[:, np.newaxis, alive]  # (refs, classes, units)
            # One float64 product for all references and classes: (.., units) @ (units, pool outputs).
            np.matmul(grad_dense.reshape(-1, len(alive)), network.dense_kernel_t[alive],
                      out=pooled_grad[image].reshape(-1, pooled_grad.shape[-1]))
        pool_conv_backward(
            pooled_grad, images, x["conv_in"], references, r["conv_in"], network.conv_kernel_t, *network.pool_size,
            totals,
        )

    def shap_values(self, images: np.ndarray, background: np.ndarray, classes: np.ndarray | None = None,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Return the values in shap's layout, (images, rows, columns, channels, classes) float32.

        classes: None for every class, or an int array (images, k) naming the k classes to explain
        for each image; the values' last axis then follows it.
        progress: called with the number of background images done after each chunk.
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        image_values = self.network.forward(images)
        count = self.num_classes if classes is None else np.shape(classes)[1]
        totals = np.zeros(images.shape + (count,))
        for references, reference_values in self.chunks(background):
            self.add_chunk(totals, images, image_values, references, reference_values, classes)
            if progress is not None:
                progress(len(references))
        return (totals / len(background)).astype(np.float32)


def select(multipliers: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """Return the rows of multipliers (images, refs, classes, logits) for each image's chosen classes."""
    if classes is None:
        return multipliers
    classes = np.asarray(classes)
    return multipliers[np.arange(len(classes))[:, np.newaxis], :, classes].transpose(0, 2, 1, 3)


def relu_multipliers(image_in: np.ndarray, reference_in: np.ndarray) -> np.ndarray:
    """Return shap's ReLU rule, (relu(x) - relu(r)) / (x - r), or the reference's gradient where x ~ r."""
    delta = image_in - reference_in
    with np.errstate(divide="ignore", invalid="ignore"):
        rescale = (np.maximum(image_in, 0) - np.maximum(reference_in, 0)) / delta
    close = (reference_in > 0).astype(np.float32)
    return head.where_close(delta, head.NONLINEAR_EPSILON, close, rescale).astype(np.float32).astype(np.float64)
