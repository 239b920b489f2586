"""A Keras model as a chain of steps: its forward pass, keeping the values the rules read, and its backward pass.

Each layer gives its steps by deepshap.rules' table: its own map, then its activation as a step of
its own (a Dropout gives none); deepshap.support checks first that each has a rule. The model's last
Dense is the head: its logits are explained through a rule of deepshap.head, so its softmax is no step.

Forward: float32 values, as shap.DeepExplainer's, keeping the inputs that the nonlinear rules and the
compiled loops read; Dense and Conv2D in float64, each output rounded once (deepshap.rules), the other
layers TensorFlow's own ops, so that an image's values do not depend on the images beside it.
Backward: the multipliers at the logits, (references, classes, logits) float64 for one image, through
the chain's segments from the last: a compiled loop of deepshap.fused where one matches, else the
step's plain rule. A conv block at the input is the
Explainer's to run, fused with the sum over references.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from deepshap.fused import Segment, cover, report_plain
from deepshap.kernels import aligned_empty
from deepshap.rules import ACTIVATIONS, RESHAPE, RULES, Step, activation_name, registered_kind
from deepshap.support import UnsupportedModelError, check_model

__all__ = ["Network", "UnsupportedModelError", "layer_steps"]


def layer_steps(layer: layers.Layer, is_head: bool = False) -> list[Step]:
    """Return the steps of one supported Keras layer: its own map (unless RULES says none), then its activation's."""
    input_shape, output_shape = tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:])
    rule = RULES[registered_kind(layer)]
    steps = [] if rule is None else [Step(layer, rule, input_shape, output_shape, rule.constants(layer))]
    activation = None if is_head else ACTIVATIONS.get(activation_name(layer))
    if activation is not None:
        steps.append(Step(layer, activation, output_shape, output_shape, activation.constants(layer)))
    return steps


class Network:
    """A supported model as a chain of steps, covered by compiled loops where they match (with fuse)."""

    def __init__(self, model: keras.Model, fuse: bool = True):
        model_layers = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
        check_model(model_layers)
        last = len(model_layers) - 1
        self.steps = [step for position, layer in enumerate(model_layers)
                      for step in layer_steps(layer, is_head=position == last)]
        self.head = "softmax" if activation_name(model_layers[-1]) == "softmax" else "linear"
        self.num_classes = model_layers[-1].units
        segments = cover(self.steps, fuse)
        if fuse:
            report_plain(self.steps, segments)
        # The conv block at the input, if any: the Explainer runs it, with the sum over references.
        first = segments[0]
        self.input_block: Segment | None = first if first.loop is not None and first.loop.place == "input" else None
        self.segments = segments[1:] if self.input_block else segments  # what backward runs
        self.backward_start = self.segments[0].start if self.segments else len(self.steps)  # where backward ends
        # The top's loop right above the input block, reshapes between (the lab's model): the input block's loop
        # can then make each pair's multipliers itself, without backward (Explainer.add_chunk says where it does).
        above = [segment for segment in self.segments if self.steps[segment.start].rule is not RESHAPE]
        self.top_over_input: Segment | None = (above[0] if self.input_block and len(above) == 1 and above[0].loop
                                               and above[0].loop.place == "top" else None)
        # The inputs that plain rules and compiled loops read.
        self.kept = {segment.start for segment in self.segments
                     if segment.loop is None and self.steps[segment.start].rule.needs_values}
        self.kept |= {index for segment in segments for index in segment.reads}
        # The compiled loops sum in float32: where one writes backward's result, float32 holds it exactly
        # (half the bytes of the largest array, which the input block then reads: measured 1.3x faster there).
        writer = next((segment for segment in self.segments if self.steps[segment.start].rule is not RESHAPE), None)
        self.output_dtype = np.float32 if writer is not None and writer.loop is not None else np.float64

    def backward(self, grad: np.ndarray, image: dict, references: dict, out: np.ndarray | None = None) -> np.ndarray:
        """Return the multipliers at the input of steps[backward_start], (refs, classes, *its input shape) float64.

        grad (refs, classes, logits): the head's multipliers for one image; image and references: the
        forward values of that image (indexed for it) and of the references. out: None, or an array
        (refs, classes, size of the input) of output_dtype to return them in (a compiled loop writes there directly
        when only reshapes follow it, saving a copy of the largest array).
        """
        for segment in reversed(self.segments):
            if segment.loop is None:
                step = self.steps[segment.start]
                grad = step.backward(grad, image[segment.start] if step.rule.needs_values else None,
                                     references.get(segment.start))
                continue
            target = out if self.only_reshapes_below(segment.start) else None
            grad = segment.loop.run(segment.constants, grad, [image[index] for index in segment.reads],
                                    [references[index] for index in segment.reads], target,
                                    image.get(("image part", segment.start)))
        if out is None:
            return grad
        if not np.shares_memory(grad, out):
            out[...] = grad.reshape(out.shape)
        return out

    def only_reshapes_below(self, index: int) -> bool:
        """Return whether the steps backward runs below steps[index] are all reshapes: its result is the backward's."""
        return all(step.rule is RESHAPE for step in self.steps[self.backward_start : index])

    def image_forward(self, images: np.ndarray) -> dict:
        """Return forward's values of images and, keyed ("image part", segment start), each compiled loop's part
        that is an image's alone, (images, ...): made once per image, not again for each chunk of references
        (the top's, 216 KB an image in the lab's model: made per chunk, it took 21 % of trust's time at 30 references
        a chunk, by cProfile). The parts are stacked onto a cache line, for the loops' vector loads
        (deepshap.kernels.aligned)."""
        values = self.forward(images)
        for segment in self.segments:
            if segment.loop is not None and segment.loop.image_part is not None:
                parts = [segment.loop.image_part(segment.constants, [values[index][k] for index in segment.reads])
                         for k in range(len(images))]
                stacked = aligned_empty((len(parts),) + parts[0].shape, parts[0].dtype)
                values[("image part", segment.start)] = np.stack(parts, out=stacked)
        return values

    def forward(self, images: np.ndarray) -> dict:
        """Return {step index: its input values} for the steps whose values are kept, and "logits": float32.

        Each image's values do not depend on the batch it is in (tests/test_deepshap.py); a batch of one runs as
        two, as the other batches run (NumPy multiplies one row by another BLAS routine).
        """
        count = len(images)
        x = tf.constant(np.concatenate([images, images]) if count == 1 else images)
        values = {}
        for index, step in enumerate(self.steps):
            if index in self.kept:
                values[index] = x.numpy()[:count]
            x = step.forward(x)
        values["logits"] = x.numpy()[:count]
        return values
