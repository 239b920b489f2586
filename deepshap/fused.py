"""The compiled loops, registered against the runs of plain rules they replace.

FUSED lists each loop with its pattern: the steps it computes at once, each matched by its plain
rule in deepshap.rules (a caller who replaces a rule leaves the loop that stood for it) and a
condition on its layer. cover() splits a model's chain into these loops, where they match, and
single plain steps elsewhere; report_plain() says in one log line which layers run on the plain
rules, slower. Each loop is tested equal to the chain of plain rules it replaces
(tests/test_kernels_input.py, test_kernels_block.py, test_kernels_top.py).

    input block: Conv2D (stride 1, unpadded) -> [BatchNormalization] -> ReLU -> MaxPooling2D (valid), the
        model's first steps, fused with (image - reference) and the sum over references (deepshap.kernels_input).
    conv block: the same, its conv padded or not, anywhere else (deepshap.kernels_block).
    top: Dense -> ReLU -> Dense, the model's last steps (deepshap.kernels_top).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deepshap.kernels import aligned
from deepshap.kernels_block import block_backward
from deepshap.kernels_input import pool_conv_backward
from deepshap.kernels_top import dense_top_backward, image_rows, pair_terms
from deepshap.rules import BATCH_NORM, CONV, DENSE, MAX_POOL, RELU, RESHAPE, Rule, Step, relu_multipliers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """One step of a pattern: its plain rule, a condition on the step, whether it may be absent, and
    whether the loop reads the values at its input."""

    rule: Rule
    condition: Callable[[Step], bool] = lambda step: True
    optional: bool = False
    reads: bool = False


@dataclass(frozen=True)
class Loop:
    """A compiled loop and the run of plain rules it replaces.

    place: "input" (the model's first steps), "inside" (anywhere) or "top" (ending at the model's last step).
    prepare(*steps): the loop's constants from its matched steps, one per part (None where absent).
    run, for "input": run(constants, pooled_grad, images, image_reads, references, reference_reads,
        totals, mix) adds the sum over references of multiplier * (image - reference) to totals (mix: see
        deepshap.kernels_input.pool_conv_backward); else
        run(constants, grad, image_reads, reference_reads, out) returns the multipliers at its first
        step's input, as the plain rules do. The reads: the values at its parts' inputs marked reads.
    """

    name: str
    summary: str  # its pattern, in words, for the log line
    pattern: tuple[Part, ...]
    place: str
    prepare: Callable[..., dict]
    run: Callable
    # image_part(constants, image_reads): what run reads of an image alone, made once per image and passed to
    # run as its last argument (None: nothing), for a loop not at the input.
    image_part: Callable | None = None


@dataclass
class Segment:
    """A run of the chain, steps[start : end + 1]: one compiled loop, or one plain step (loop None)."""

    start: int
    end: int
    loop: Loop | None = None
    constants: dict = field(default_factory=dict)
    reads: tuple[int, ...] = ()  # the steps whose input values the loop reads


def block_constants(conv: Step, batch_norm: Step | None, relu: Step, pool: Step) -> dict:
    """Return a conv block's kernel (filters, rows, columns, channels) float64, BatchNormalization's scale folded in,
    the conv's padding (top, left), the pool's size, the block's input shape and its output size."""
    kernel = conv.layer.kernel.numpy().astype(np.float64)  # (rows, columns, channels, filters)
    if batch_norm is not None:
        kernel = kernel * batch_norm.constants["scale"]  # the transpose of conv then scale is that of the scaled conv
    # TensorFlow's 'same' padding puts the odd pixel at the bottom and right.
    padding = (0, 0) if conv.layer.padding == "valid" else ((kernel.shape[0] - 1) // 2, (kernel.shape[1] - 1) // 2)
    return {"kernel": np.ascontiguousarray(np.moveaxis(kernel, -1, 0)), "padding": padding,
            "pool_size": tuple(pool.layer.pool_size), "input_shape": conv.input_shape,
            "output_size": int(np.prod(pool.output_shape))}


def run_input_block(constants: dict, pooled_grad: np.ndarray | None, images: np.ndarray, image_reads: list,
                    references: np.ndarray, reference_reads: list, totals: np.ndarray, mix: np.ndarray | None = None,
                    top: tuple | None = None) -> None:
    pool_conv_backward(pooled_grad, images, image_reads[0], references, reference_reads[0], constants["kernel"],
                       *constants["pool_size"], totals, mix, top)


def run_block(constants: dict, grad: np.ndarray, image_reads: list, reference_reads: list,
              out: np.ndarray | None, image_part: None = None) -> np.ndarray:
    return block_backward(grad, image_reads[0], reference_reads[0], constants["kernel"], constants["padding"],
                          constants["pool_size"], constants["input_shape"], out)


def top_constants(hidden: Step, relu: Step, head: Step) -> dict:
    """Return the top's kernels, transposed: hidden (units, inputs) float32, head (logits, units) float64."""
    return {"hidden": aligned(hidden.constants["kernel_t"]),
            "head": head.constants["kernel_t"]}


def top_image_rows(constants: dict, image_reads: list) -> np.ndarray:
    return image_rows(image_reads[0] > 0, constants["hidden"], constants["head"])


def top_terms(constants: dict, grad: np.ndarray, image_reads: list, reference_reads: list
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the top's pair_terms for one image's pairs: with the top's kernels and the image's rows, what the input
    block's loop reads to make the top's multipliers itself (deepshap.kernels_input.pool_conv_backward's top)."""
    image_in, reference_in = image_reads[0], reference_reads[0]  # (units,), (refs, units): the ReLU's inputs
    return pair_terms(grad, image_in > 0, relu_multipliers(image_in[np.newaxis], reference_in), constants["head"])


def run_top(constants: dict, grad: np.ndarray, image_reads: list, reference_reads: list,
            out: np.ndarray | None, rows: np.ndarray | None = None) -> np.ndarray:
    image_in, reference_in = image_reads[0], reference_reads[0]  # (units,), (refs, units): the ReLU's inputs
    rule = relu_multipliers(image_in[np.newaxis], reference_in)
    return dense_top_backward(grad, image_in > 0, rule, constants["hidden"], constants["head"], out, rows)


def stride_one(step: Step) -> bool:
    return tuple(step.layer.strides) == (1, 1)


def unpadded(step: Step) -> bool:
    # A 'same' conv pads kernel size - 1 positions per axis at stride 1: none only for a 1x1 kernel.
    return stride_one(step) and (step.layer.padding == "valid" or tuple(step.layer.kernel_size) == (1, 1))


def valid(step: Step) -> bool:
    return step.layer.padding == "valid"


def conv_block(conv_condition: Callable[[Step], bool]) -> tuple[Part, ...]:
    return (Part(CONV, conv_condition), Part(BATCH_NORM, optional=True), Part(RELU, reads=True),
            Part(MAX_POOL, valid))


BLOCK = "Conv2D (stride 1) -> [BatchNormalization] -> ReLU -> MaxPooling2D (valid)"
FUSED: list[Loop] = [
    Loop("input block", BLOCK, conv_block(unpadded), "input", block_constants, run_input_block),
    Loop("conv block", BLOCK, conv_block(stride_one), "inside", block_constants, run_block),
    Loop("top", "Dense -> ReLU -> Dense at the top", (Part(DENSE), Part(RELU, reads=True), Part(DENSE)), "top",
         top_constants, run_top, top_image_rows),
]


def match(pattern: tuple[Part, ...], steps: list[Step], start: int) -> list[int | None] | None:
    """Return the index of the step each part matches from steps[start] (None for an absent optional part), or None."""
    matched, index = [], start
    for part in pattern:
        if index < len(steps) and steps[index].rule is part.rule and part.condition(steps[index]):
            matched.append(index)
            index += 1
        elif part.optional:
            matched.append(None)
        else:
            return None
    return matched


def loop_at(loop: Loop, steps: list[Step], start: int) -> Segment | None:
    """Return loop's segment starting at steps[start], where its pattern and place match there, or None."""
    matched = match(loop.pattern, steps, start) if loop.place != "input" or start == 0 else None
    if matched is None:
        return None
    end = max(index for index in matched if index is not None)
    if loop.place == "top" and end != len(steps) - 1:
        return None
    constants = loop.prepare(*(None if index is None else steps[index] for index in matched))
    reads = tuple(index for index, part in zip(matched, loop.pattern) if part.reads and index is not None)
    return Segment(start, end, loop, constants, reads)


def cover(steps: list[Step], fuse: bool = True) -> list[Segment]:
    """Return the chain as segments, in order: at each step the first loop of FUSED that matches there
    (with fuse), else the step alone, on its plain rule."""
    segments, index = [], 0
    while index < len(steps):
        loops = (loop_at(loop, steps, index) for loop in FUSED) if fuse else ()
        segment = next((segment for segment in loops if segment is not None), None) or Segment(index, index)
        segments.append(segment)
        index = segment.end + 1
    return segments


def report_plain(steps: list[Step], segments: list[Segment]) -> None:
    """Log one warning naming the layers whose steps run on the plain rules (reshapes aside, which cost nothing)."""
    plain = [steps[segment.start].layer for segment in segments
             if segment.loop is None and steps[segment.start].rule is not RESHAPE]
    names = dict.fromkeys(f"'{layer.name}' ({layer.__class__.__name__})" for layer in plain)
    if names:
        logger.warning("deepshap: layers %s run on the plain rules, no compiled loop, slower (compiled: %s)",
                       ", ".join(names), "; ".join(dict.fromkeys(loop.summary for loop in FUSED)))
