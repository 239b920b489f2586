"""Explainer: shap.DeepExplainer's values for all images and classes at once, the background streamed."""

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import keras
import numba
import numpy as np

from deepshap import head
from deepshap.fused import top_terms
from deepshap.network import Network
from deepshap.options import OUTPUTS, SOFTMAX_RULE_NAMES
from deepshap.support import UnsupportedModelError

# Images a pass takes. Where the top runs apart from the input block, their multipliers at the block's input are
# held at once: 5 x 100 references x 10 classes x 5,408 at the lab's sizes, 216 MB (measured: the whole process's
# peak 0.2 GB lower than with all 10 images of the lab at once, for the same time); where it runs inside the block's
# loop (the lab's model, every class), only their top terms, 5 MB. Other chunks and class counts hold as many (image x reference x
# class) rows: fewer images a pass route each reference through the input block once more per pass
# (measured: trust's 3 rules stacked, 30 classes in chunks of 30, took 1.5x the time at one image a pass).
IMAGES_PER_PASS = 5
ROWS_PER_PASS = IMAGES_PER_PASS * 100 * 10
# Images a forward pass of predict takes: an image's logits and probabilities are the same in any batch
# (Network.forward, softmax).
PREDICT_BATCH = 128
# Images explained at once: their image parts (the top's rows, 216 KB an image in the lab's model) are held
# through the pass over the background.
IMAGES_PER_BATCH = 1000
SOFTMAX_RULES = dict(zip(SOFTMAX_RULE_NAMES, (head.shap_softmax, head.shapley_softmax), strict=True))


@dataclass(frozen=True)
class Background:
    """A background's chunks with their forward values, as Explainer.chunks yields them: made once by
    Explainer.prepare for explaining several sets of images against the same background (the mistakes'
    shards: its forward pass was 9 % of a shard's time at 1,000 references)."""

    chunks: list[tuple[np.ndarray, dict]]

    def __len__(self) -> int:
        return sum(len(references) for references, _ in self.chunks)


class Explainer:
    """DeepSHAP values of a supported Keras model.

    output: "probability" explains the softmax's outputs, with the head rule softmax_rule ("shap":
    shap.DeepExplainer's, value for value; "shapley": the exact Shapley values of the softmax over the
    logits); "logit" explains the logits, the scores before the softmax.
    chunk_size: background images per step; memory grows with it, not with the background.
    fuse: run the conv blocks and the model's top in the compiled loops of deepshap.fused, where the
    model has them, and log one line naming the layers that run on the plain rules (False: the plain
    rules of deepshap.rules throughout, as the tests compare them).

    Deterministic: the same model, images, background and chunk size give the same bytes whatever
    the thread count, BLAS kernel or CPU vector width (sums in a fixed order, each rounded as
    written: fma, no fastmath; float64 wherever a BLAS product's order could differ), and an
    image's values do not depend on the other images explained with it.
    """

    def __init__(self, model: keras.Model, output: str = "probability", softmax_rule: str = "shap",
                 chunk_size: int = 100, fuse: bool = True):
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if softmax_rule not in SOFTMAX_RULES:
            raise ValueError(f"softmax_rule must be one of {', '.join(SOFTMAX_RULES)}, got {softmax_rule!r}")
        self.network = Network(model, fuse)
        if output == "probability" and self.network.head != "softmax":
            raise UnsupportedModelError(f"output 'probability' needs a softmax output layer; '{model.layers[-1].name}' "
                                        f"has none")
        self.head = head.linear if output == "logit" else SOFTMAX_RULES[softmax_rule]
        self.model = model
        self.output = output
        self.chunk_size = chunk_size
        self.num_classes = self.network.num_classes
        self.background_logits: tuple[object, np.ndarray | None] = (None, None)  # the last background explained's

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the explained outputs of images, (images, classes) float32: probabilities or logits."""
        return np.concatenate(list(self.outputs(self.logits(images))))

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Return the logits of images, (images, classes) float32, PREDICT_BATCH images a forward pass."""
        return np.concatenate([self.network.forward(np.asarray(images[start : start + PREDICT_BATCH],
                                                               dtype=np.float32))["logits"]
                               for start in range(0, len(images), PREDICT_BATCH)])

    def outputs(self, logits: np.ndarray) -> Iterator[np.ndarray]:
        """Yield the explained outputs of logits (images, classes), float32, PREDICT_BATCH images at a time."""
        for start in range(0, len(logits), PREDICT_BATCH):
            batch = logits[start : start + PREDICT_BATCH]
            yield batch if self.output == "logit" else softmax(batch)

    def expected_value(self, background: np.ndarray) -> np.ndarray:
        """Return the mean explained output over the background, E[f(background)], (classes,) float64.

        After an explanation against this very background (the same object, unchanged), from the logits its pass made
        (measured: the lab's forward pass of 5,000 images again took 0.4 s): the same bytes, an image's logits
        being the same in any batch (Network.forward).
        """
        logits = self.background_logits[1] if self.background_logits[0] is background else self.logits(background)
        total = np.zeros(self.num_classes)
        for outputs in self.outputs(logits):
            total += outputs.astype(np.float64).sum(axis=0)
        return total / len(logits)

    def chunks(self, background: np.ndarray | Background) -> Iterator[tuple[np.ndarray, dict]]:
        """Yield (references, their forward values) a chunk at a time."""
        if isinstance(background, Background):
            yield from background.chunks
            return
        for start in range(0, len(background), self.chunk_size):
            references = np.ascontiguousarray(background[start : start + self.chunk_size], dtype=np.float32)
            yield references, self.network.forward(references)

    def prepare(self, background: np.ndarray) -> Background:
        """Return the background with its forward values, for shap_values to take in its place: the same bytes,
        without the forward pass (memory: the kept values of every reference, 87 KB each in the lab's model)."""
        return Background(list(self.chunks(background)))

    def head_multipliers(self, images: np.ndarray, references: np.ndarray, classes: np.ndarray | None = None
                         ) -> np.ndarray:
        """Return the head rule's multipliers w.r.t. the logits, (images, references, classes, logits) float64."""
        image_logits = self.network.forward(np.asarray(images, dtype=np.float32))["logits"]
        reference_logits = self.network.forward(np.asarray(references, dtype=np.float32))["logits"]
        return rule_rows(self.head, image_logits, reference_logits, classes)

    def add_chunk(self, totals: np.ndarray, images: np.ndarray, x: dict, references: np.ndarray, r: dict,
                  classes: np.ndarray | None, buffer: dict, heads: tuple[Callable, ...] | None = None) -> None:
        """Add one chunk's sum of multiplier * (image - reference) to totals (images, *image shape, classes).

        heads: the head rules explained at once, each one's classes after the previous one's on the
        last axis (None: this explainer's own). The backward is linear in the head's multipliers and
        each class runs on its own below the head, so several rules share the forward values, the
        ReLU and max-pool rules of each pair, and the top's product of the image's units.
        buffer keeps the fused block's input multipliers across chunks (measured: a fresh 400 MB
        array per chunk made the step 1.6x slower, in page faults). It holds ROWS_PER_PASS (image,
        reference, class) rows: each image's sums are its own, so the passes give the same bytes as
        one pass of all images.
        """
        network, block = self.network, self.network.input_block
        # (images, refs, classes, logits)
        grad_logits = head_rows(heads or (self.head,), x["logits"], r["logits"], classes)
        mix = None
        if block is not None and grad_logits.shape[2] > grad_logits.shape[3]:
            # More rows than logits (several rules): each logit's unit row runs back instead, mixed at the input
            # by the rows (measured: trust's 3 rules x 10 classes at 1,000 references, 1.6x less CPU time; the same
            # values to float32's precision).
            mix, grad_logits = grad_logits, np.broadcast_to(np.eye(grad_logits.shape[3]),
                                                            grad_logits.shape[:2] + (grad_logits.shape[3],) * 2)
        group = min(len(grad_logits), max(1, ROWS_PER_PASS // (grad_logits.shape[1] * grad_logits.shape[2])))
        if network.top_over_input is not None and grad_logits.shape[2] >= grad_logits.shape[3]:
            # The top inside the input block's loop where each pair has as many rows as logits (measured on the lab's
            # model: the explanation 8-10 % faster at 10 classes). At 2 classes, on Ray's two one-thread workers, it
            # was slower: the mistakes stage outside DVC 68.0 and 78.5 s against 58.8 and 60.0 s with the two loops.
            self.add_fused(totals, images, x, references, r, grad_logits, mix, group)
            return
        if block is not None:
            shape = (group,) + grad_logits.shape[1:3] + (block.constants["output_size"],)
            if buffer.get("array") is None or buffer["array"].size < np.prod(shape):
                buffer["array"] = np.empty(int(np.prod(shape)), dtype=network.output_dtype)
            pooled_grad = buffer["array"][: np.prod(shape)].reshape(shape)
        for image, grad in enumerate(grad_logits):
            # One image at a time, so that its values do not depend on the others explained with it
            # (any shard of images gives the same bytes); (refs, classes, *shape) float64 throughout.
            image_values = {index: values[image] for index, values in x.items()}
            if block is None:
                grad = network.backward(grad, image_values, r)
                difference = (images[image] - references).astype(np.float64)  # (refs, *image shape)
                totals[image] += np.einsum("rc...,r...->...c", grad, difference)
                continue
            network.backward(grad, image_values, r, out=pooled_grad[image % group])
            if image % group == group - 1 or image == len(grad_logits) - 1:
                done = slice(image - image % group, image + 1)
                block.loop.run(block.constants, pooled_grad[: image % group + 1], images[done],
                               [x[index][done] for index in block.reads], references,
                               [r[index] for index in block.reads], totals[done], None if mix is None else mix[done])

    def add_fused(self, totals: np.ndarray, images: np.ndarray, x: dict, references: np.ndarray, r: dict,
                  grad_logits: np.ndarray, mix: np.ndarray | None, group: int) -> None:
        """add_chunk for a model whose top is right above its input block: the input block's loop makes each pair's
        multipliers at its output itself, from the top's terms of group images at a time (their sums are their own)."""
        block, top = self.network.input_block, self.network.top_over_input
        for first in range(0, len(grad_logits), group):
            done = slice(first, first + group)
            terms = [top_terms(top.constants, grad, [x[index][image] for index in top.reads],
                               [r[index] for index in top.reads])
                     for image, grad in enumerate(grad_logits[done], first)]
            grad, unit_coefficients, differs = (np.stack(arrays) for arrays in zip(*terms))
            block.loop.run(block.constants, None, images[done], [x[index][done] for index in block.reads], references,
                           [r[index] for index in block.reads], totals[done], None if mix is None else mix[done],
                           (grad, x[("image part", top.start)][done], unit_coefficients, top.constants["hidden"],
                            differs))

    def shap_values(self, images: np.ndarray, background: np.ndarray | Background, classes: np.ndarray | None = None,
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Return the values in shap's layout, (images, rows, columns, channels, classes) float32.

        background: the references, or what prepare made of them.

        classes: None for every class, or an int array (images, k) naming the k classes to explain
        for each image; the values' last axis then follows it.
        progress: called with the number of background images done after each chunk.
        """
        return self.explain((self.head,), images, background, classes, progress)

    def reference_values(self, images: np.ndarray, references: np.ndarray) -> Iterator[np.ndarray]:
        """Yield, reference by reference, the values of images against it alone (a background of one:
        DeepLIFT's rescale rule), (images, rows, columns, channels, classes) float32 each: shap_values'
        bytes for that background, with the images' forward pass made once for all references."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        image_values, buffer = self.network.image_forward(images), {}
        for chunk, chunk_values in self.chunks(references):
            for index in range(len(chunk)):
                totals = np.zeros(images.shape + (self.num_classes,))
                one = {key: values[index : index + 1] for key, values in chunk_values.items()}
                self.add_chunk(totals, images, image_values, chunk[index : index + 1], one, None, buffer)
                yield totals.astype(np.float32)

    def shap_values_for_heads(self, heads: dict[str, Callable], images: np.ndarray, background: np.ndarray,
                              classes: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Return, per head rule (a function of deepshap.head, or an Explainer's .head), the values that an
        Explainer of that rule's shap_values gives, from one pass over the background for all of them.

        Each class's multipliers run on their own below the head, so a rule's values equal its own
        explainer's (tested within 1e-6 of the largest value; the top's float64 product by the head's
        kernel may round its last bit otherwise for another number of classes).
        """
        values = self.explain(tuple(heads.values()), images, background, classes)
        return dict(zip(heads, np.split(values, len(heads), axis=-1)))

    def explain(self, heads: tuple[Callable, ...], images: np.ndarray, background: np.ndarray | Background,
                classes: np.ndarray | None, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Return the values of each head rule in heads, their classes one rule after the other on the last axis."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        count = self.num_classes if classes is None else np.shape(classes)[1]
        totals = np.zeros(images.shape + (count * len(heads),))
        buffer, logits = {}, []
        # A batch of images at a time, so that their image parts (Network.image_forward) stay within memory.
        for start in range(0, len(images), IMAGES_PER_BATCH):
            batch = slice(start, start + IMAGES_PER_BATCH)
            image_values = self.network.image_forward(images[batch])
            batch_classes = None if classes is None else np.asarray(classes)[batch]
            chunks = self.chunks(background)
            if numba.get_num_threads() > 1:  # on one thread (a Ray worker's, a test's) the process keeps to its core
                chunks = ahead(chunks)
            for references, reference_values in chunks:
                if start == 0:
                    logits.append(reference_values["logits"])
                self.add_chunk(totals[batch], images[batch], image_values, references, reference_values, batch_classes,
                               buffer, heads)
                if progress is not None:  # a share of the chunk per batch where there are several
                    progress(len(references) if len(images) <= IMAGES_PER_BATCH
                             else len(references) * len(images[batch]) / len(images))
        if logits:
            self.background_logits = (background, np.concatenate(logits))
        return (totals / len(background)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Return the softmax of logits (rows, classes) as float32, computed in float64 and rounded once. TensorFlow's
    float32 softmax (oneDNN) gave other bits by the CPU's instructions (measured: at AVX than at AVX2 or AVX-512);
    NumPy's float64 exp differs by CPU in its last bits at most, which the rounding hides except where a value lies
    that close to a float32 rounding boundary."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def ahead(items: Iterator) -> Iterator:
    """Yield items' values in order, each next one made in a thread while the caller works on this one: the next
    chunk's forward pass beside the input block's loop, which leaves the GIL and its threads' idle moments to it
    (measured on the lab's explanation at 5,000 references, 2 cores, alternated 6 times: the engine 6.1-7.4 s and
    once 11.0 s, against 7.3-9.0 s without the thread; the same bytes)."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(next, items, None)
        while (item := future.result()) is not None:
            future = pool.submit(next, items, None)
            yield item


def select(multipliers: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """Return the rows of multipliers (images, refs, classes, logits) for each image's chosen classes."""
    if classes is None:
        return multipliers
    classes = np.asarray(classes)
    return multipliers[np.arange(len(classes))[:, np.newaxis], :, classes].transpose(0, 2, 1, 3)


def rule_rows(rule: Callable, image_logits: np.ndarray, reference_logits: np.ndarray, classes: np.ndarray | None
              ) -> np.ndarray:
    """Return a head rule's multipliers for the chosen classes, (images, refs, classes, logits) float64. The exact
    Shapley rule computes those alone (its cost grows with the classes); the others all, then select."""
    if rule is head.shapley_softmax:
        return rule(image_logits, reference_logits, classes)
    return select(rule(image_logits, reference_logits), classes)


def head_rows(heads: tuple[Callable, ...], image_logits: np.ndarray, reference_logits: np.ndarray,
              classes: np.ndarray | None) -> np.ndarray:
    """Return each head rule's multipliers for the chosen classes, one rule after the other on the classes'
    axis: (images, refs, rules x classes, logits) float64."""
    rows = [rule_rows(rule, image_logits, reference_logits, classes) for rule in heads]
    return rows[0] if len(rows) == 1 else np.concatenate(rows, axis=2)
