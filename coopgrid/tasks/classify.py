"""``classify``: an ONNX image classifier over a batch of images.

Input, either:

* an .npy float32 array, one flattened image per row, already in the
  model's value range (numeric datasets such as ``digits``); or
* image items (PNG, JPEG...; :func:`coopgrid.datasets.load_items`), which
  each worker decodes and prepares as the model's manifest says. An image
  that cannot be decoded fails alone: its row in the output has the reason.

The manifest's ``input`` says how to prepare an image (every key optional):

* ``image_size`` [height, width] (default: from ``shape``);
* ``color``: ``L`` (grayscale) or ``RGB``; default from the channel count;
* ``layout``: ``NCHW``, ``NHWC`` or ``flat`` (one row of pixels);
  ``shape`` is the input shape without the batch dimension, e.g. [3, 224, 224];
* ``scale`` (default 1/255), then ``mean`` and ``std`` per channel:
  ``x = (pixel * scale - mean) / std``;
* the digits model's form, ``value_max`` with no ``layout``: grayscale,
  light ink on dark (a light page is inverted), scaled to 0..value_max;
* ``scores``: ``probabilities`` or ``logits`` (softmax is applied); by
  default a model with two outputs (scikit-learn's label + probabilities) is
  read as such, and a single output is softmaxed unless its rows already
  sum to one.

``classes`` (the manifest's) names the labels; without it a label is the
class index. Output: the label and the confidence (highest class
probability, rounded to 4 decimals so honest workers on different hardware
produce the same bytes) per image; with ``top_k`` > 1 also the k best labels
and their probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from coopgrid.datasets import Dataset, digit_like
from coopgrid.errors import InvalidInput
from coopgrid.tasks.base import ItemParams, TaskOutput, TaskType, item_errors, split_items
from coopgrid.tasks.common import decode_image, items_input, onnx_session
from coopgrid.tasks.echo import npy_load, split_rows

CONFIDENCE_DECIMALS = 4


class ClassifyParams(ItemParams):
    top_k: int = Field(1, ge=1, le=1000, description="Also report the k most likely labels with their probabilities.")


@dataclass
class Classifier:
    """An ONNX Runtime session plus what the manifest says about feeding it."""

    session: Any
    manifest: dict[str, Any] = field(default_factory=dict)

    # an InferenceSession's interface, for callers that used the session directly
    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.session.run(*args, **kwargs)

    @property
    def input_spec(self) -> dict[str, Any]:
        return self.manifest.get("input", {}) or {}

    def input_shape(self) -> list[int]:
        spec = self.input_spec
        if spec.get("shape"):
            return [int(d) for d in spec["shape"]]
        dims = self.session.get_inputs()[0].shape[1:]
        if all(isinstance(d, int) for d in dims) and dims:
            return [int(d) for d in dims]
        raise InvalidInput("the classifier's manifest needs input.shape (without the batch dimension) to feed it images")

    def prepare(self, image: Any) -> np.ndarray:
        """One decoded PIL image as one row of the model's input (no batch dimension)."""
        from PIL import Image

        spec = self.input_spec
        shape = self.input_shape()
        layout = spec.get("layout") or ("flat" if len(shape) == 1 else "NCHW")
        if layout == "flat" and "value_max" in spec and "mean" not in spec:  # the digits model's form
            h, w = spec.get("image_size") or _square(shape[0])
            gray = np.asarray(image.convert("L").resize((w, h), Image.Resampling.BILINEAR), np.float32)
            return digit_like(gray, float(spec["value_max"]))
        if layout == "NCHW":
            channels, h, w = shape[-3:] if len(shape) >= 3 else (1, *shape[-2:])
        elif layout == "NHWC":
            h, w, channels = shape[-3:]
        else:
            size = spec.get("image_size")
            if not size:
                raise InvalidInput("a flat classifier input needs input.image_size [height, width] in its manifest")
            h, w = size
            channels = 1 if spec.get("color", "L") == "L" else 3
        h, w = spec.get("image_size") or (h, w)
        color = spec.get("color") or ("L" if channels == 1 else "RGB")
        im = image.convert(color).resize((int(w), int(h)), Image.Resampling.BILINEAR)
        x = np.asarray(im, np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        x = x * np.float32(spec.get("scale", 1 / 255))
        if "mean" in spec:
            x = x - np.asarray(spec["mean"], np.float32)
        if "std" in spec:
            x = x / np.asarray(spec["std"], np.float32)
        if layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return x.reshape(-1) if layout == "flat" else x

    def scores(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(labels output if the model has one, class probabilities) for a batch."""
        inp = self.session.get_inputs()[0]
        declared = inp.shape[1:]
        if len(declared) != x.ndim - 1 and x.ndim == 2 and self.input_spec.get("shape"):
            x = x.reshape(len(x), *self.input_shape())
        outs = self.session.run(None, {inp.name: x.astype(np.float32, copy=False)})
        kind = self.input_spec.get("scores")
        if len(outs) >= 2 and kind is None:
            return np.asarray(outs[0]), np.asarray(outs[1], dtype=np.float64)
        raw = np.asarray(outs[0], dtype=np.float64).reshape(len(x), -1)
        if kind == "probabilities" or (kind is None and (raw >= 0).all() and np.allclose(raw.sum(axis=1), 1, atol=1e-3)):
            return None, raw
        z = raw - raw.max(axis=1, keepdims=True)
        e = np.exp(z)
        return None, e / e.sum(axis=1, keepdims=True)


def _square(n: int) -> tuple[int, int]:
    side = int(round(n**0.5))
    if side * side != n:
        raise InvalidInput("the classifier's manifest needs input.image_size [height, width]")
    return side, side


class ClassifyTask(TaskType):
    name = "classify"
    Params = ClassifyParams
    needs_model = True
    accepts = ("array", "bytes")
    # Labels are compared exactly, and a label mismatch is evidence for slashing; an argmax can
    # flip between CPUs whose probabilities differ by ~6e-7 (SSE against FMA kernels, measured by
    # bench/platform_variation.py) when two classes tie that closely. Workers of one platform class
    # produce identical bits, so replicas stay within one class.
    homogeneous = True
    # reduced in pieces: a piece's label type and accuracy are its own, the job's are picked from
    # all pieces' (job_schema, finish_figures) as the whole-job reduce picks them from all labels
    streams = True

    def split(self, dataset: Dataset, task_size: int, params: BaseModel) -> Iterator[tuple[bytes, int]]:
        if dataset.kind == "bytes":
            if dataset.media != "image":
                raise InvalidInput(f"classify needs images, not {dataset.media or 'byte'} items")
            return split_items(dataset, task_size, params)
        if dataset.kind != "array" or dataset.x.dtype.kind not in "fiu":
            raise InvalidInput(f"classify needs numeric images or image files, not {dataset.x.dtype if dataset.kind == 'array' else dataset.kind}")
        max_bytes = getattr(params, "task_bytes", None)
        if max_bytes is None:
            return split_rows(dataset, task_size, np.float32)
        return (
            (out, n)
            for a, b in dataset.ranges(task_size, max_bytes)
            for out, n in split_rows(Dataset(dataset.x[a:b]), b - a, np.float32)
        )

    def check_input(self, dataset: Dataset, manifest: dict[str, Any]) -> None:
        """Rows of numbers must hold as many values as the model's input.shape (image files are resized)."""
        shape = (manifest.get("input") or {}).get("shape")
        if dataset.kind != "array" or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            return
        want = int(np.prod(shape))
        got = int(np.prod(dataset.x.shape[1:])) if dataset.x.ndim > 1 else 1
        if got != want:
            raise InvalidInput(
                f"each item of this dataset has shape {list(dataset.x.shape[1:])} ({got} values), but the model "
                f"takes input.shape {list(shape)} ({want} values); give a dataset made for this model, or image files "
                "(resized to the model's image_size)",
                expected=list(shape), actual=list(dataset.x.shape[1:]),
            )

    def load_model(self, model_bytes: bytes, manifest: dict[str, Any]) -> Classifier:
        session = onnx_session(model_bytes)
        return Classifier(session, manifest or {})

    def run(self, task_input: bytes, model: Any, params: BaseModel) -> dict[str, Any]:
        if not isinstance(model, Classifier):  # a bare InferenceSession
            model = Classifier(model)
        top_k = getattr(params, "top_k", 1)
        errors: dict[int, str] = {}
        if task_input[:4] == b"CGB1":
            _, items = items_input(task_input, ("image",))
            rows: list[np.ndarray] = []
            good: list[int] = []
            for i, data in enumerate(items):
                try:
                    rows.append(model.prepare(decode_image(data)))
                    good.append(i)
                except ValueError as exc:
                    errors[i] = str(exc)
            n = len(items)
            x = np.stack(rows) if rows else None
        else:
            x = npy_load(task_input).astype(np.float32, copy=False)
            x = x.reshape(len(x), -1)
            n, good = len(x), list(range(len(x)))
        labels_out: list[Any] = [None] * n
        confidence: list[float | None] = [None] * n
        tops: list[Any] = [None] * n
        if x is not None and len(good):
            label_arr, probs = model.scores(x)
            classes = model.manifest.get("classes") or []
            best = probs.argmax(axis=1)
            if label_arr is not None:
                found = np.asarray(label_arr).tolist()
            else:
                found = [classes[j] if j < len(classes) else int(j) for j in best.tolist()]
            conf = np.round(probs.max(axis=1), CONFIDENCE_DECIMALS).tolist()
            order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k] if top_k > 1 else None
            for r, i in enumerate(good):
                labels_out[i] = found[r] if not isinstance(found[r], float) else int(found[r])
                confidence[i] = conf[r]
                if order is not None:
                    idx = order[r].tolist()
                    names = [classes[j] if j < len(classes) else int(j) for j in idx]
                    tops[i] = [names, np.round(probs[r, idx], CONFIDENCE_DECIMALS).tolist()]
        out: dict[str, Any] = {"labels": labels_out, "confidence": confidence}
        if top_k > 1:
            out["top_k"] = tops
        if errors:
            out["errors"] = item_errors(errors)
        return out

    def canonical(self, output: dict[str, list[Any]]) -> bytes:
        keys = ["labels", "confidence"] + [k for k in ("top_k", "errors") if k in output]
        return orjson.dumps({k: output[k] for k in keys})

    def decode(self, data: bytes) -> dict[str, list[Any]]:
        return orjson.loads(data)

    def gold_output(self, output: Any, like: Dataset) -> bytes:
        # a submitter knows the label, not this model's confidence: the label is what gold checks
        # (fails_gold), so it is all a labelled item needs
        label = output.get("labels", [None])[0] if isinstance(output, dict) else output
        if isinstance(output, dict) and (set(output) - {"labels", "confidence"} or len(output.get("labels", [])) != 1):
            raise ValueError('output of classify is the label: 3, "cat" or {"labels": [3]}')
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise ValueError('output of classify is the label: 3, "cat" or {"labels": [3]}')
        return orjson.dumps({"labels": [label]})

    def fails_gold(self, known: dict[str, list[Any]], got: dict[str, list[Any]]) -> bool:
        # a submitter may write a class as 3 or "3" whichever the model emits: the label is what counts.
        # An item every honest worker reports it cannot decode (a broken image in the gold file) is no
        # evidence against anyone: quorums judge a worker that claims errors where others do not
        if got.get("errors"):
            return False
        return [str(v) for v in known["labels"]] != [str(v) for v in got.get("labels", [])]

    def provably_different(self, a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
        # labels are compared exactly (argmax of one model on one input); confidences with a tolerance
        return a.get("labels") != b.get("labels")

    def agree(self, a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
        tol = 10**-CONFIDENCE_DECIMALS * 5
        if a["labels"] != b["labels"] or a.get("errors", []) != b.get("errors", []) or ("top_k" in a) != ("top_k" in b):
            return False
        ca = np.array([c if c is not None else np.nan for c in a["confidence"]], dtype=np.float64)
        cb = np.array([c if c is not None else np.nan for c in b["confidence"]], dtype=np.float64)
        if ca.shape != cb.shape or not np.allclose(ca, cb, atol=tol, equal_nan=True):
            return False
        for x, y in zip(a.get("top_k") or [], b.get("top_k") or []):
            if (x is None) != (y is None):
                return False
            if x is not None and (x[0][0] != y[0][0] or not np.allclose(x[1], y[1], atol=tol)):
                return False  # the best label must match; lower ranks may swap on near-ties
        return True

    def reduce(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        # the whole job as one piece: its label type and figures are then the job's own
        return self.finish_figures(self.reduce_piece(outputs, dataset, params, out), params)

    def reduce_piece(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        top_k = getattr(params, "top_k", 1)
        ordered = sorted(outputs, key=lambda o: o.first_item)
        cols = _columns(ordered, dataset)
        strings = not all(isinstance(v, int) and not isinstance(v, bool) for v in cols["label"] if v is not None)
        if strings:
            cols["label"] = [None if v is None else str(v) for v in cols["label"]]
        pq.write_table(_table(cols, pa.string() if strings else pa.int64(), top_k), out)
        figures: dict[str, Any] = {}
        n_errors = sum(e is not None for e in cols["error"])
        if n_errors:
            figures["item_errors"] = n_errors
        if dataset.y is not None and ordered:
            truth = np.concatenate([dataset.y[o.first_item : o.first_item + o.n_items] for o in ordered])
            figures |= _label_counts(cols, truth, strings, top_k)
        return figures

    def merge_figures(self, total: dict[str, Any], piece: dict[str, Any]) -> None:
        strings = total.get(_STRINGS, False) or piece.get(_STRINGS, False)  # a flag, not a count
        super().merge_figures(total, piece)
        if strings:
            total[_STRINGS] = True

    def finish_figures(self, total: dict[str, Any], params: BaseModel) -> dict[str, Any]:
        strings = total.pop(_STRINGS, False)
        as_strings, as_ints = total.pop("_correct_as_strings", 0), total.pop("_correct_as_ints", 0)
        top = total.pop("_top_k_correct", None)
        if "labelled_items" in total:
            n = total.pop("labelled_items")  # put back after accuracy, where the figures always had it
            total["accuracy"] = round((as_strings if strings else as_ints) / n, 6)
            total["labelled_items"] = n
            if top is not None:
                total[f"top_{getattr(params, 'top_k', 1)}_accuracy"] = round(top / n, 6)
        return total

    def job_schema(self, pieces: Sequence[pa.Schema]) -> pa.Schema:
        # the whole job's labels are strings if any label is not an int: then so are every piece's
        # (an int as the string str() makes, which is what Arrow's cast makes too)
        if any(s.field("label").type == pa.string() for s in pieces):
            pieces = [s.set(s.get_field_index("label"), pa.field("label", pa.string())) for s in pieces]
        return super().job_schema(pieces)


#: a piece's figure (dropped by finish_figures): whether some label of it is not an int
_STRINGS = "_labels_are_strings"


def _columns(outputs: Sequence[TaskOutput], dataset: Dataset) -> dict[str, list[Any]]:
    """The items of ``outputs`` (in item order) as the output's columns, labels as the model gave them."""
    cols: dict[str, list[Any]] = {k: [] for k in ("item_id", "label", "confidence", "top_labels", "top_scores", "error", "task_index", "worker")}
    for o in outputs:
        reasons = dict((i, r) for i, r in o.output.get("errors", []))
        cols["item_id"] += dataset.item_ids(o.first_item, o.first_item + o.n_items)  # not the shard's every id, per piece
        cols["label"] += o.output["labels"]
        cols["confidence"] += o.output["confidence"]
        for k, t in enumerate(o.output.get("top_k") or [None] * o.n_items):
            cols["top_labels"].append([str(v) for v in t[0]] if t else None)
            cols["top_scores"].append(t[1] if t else None)
        cols["error"] += [reasons.get(k) for k in range(o.n_items)]
        cols["task_index"] += [o.task_index] * o.n_items
        cols["worker"] += [o.worker] * o.n_items
    return cols


def _table(cols: dict[str, list[Any]], label_type: pa.DataType, top_k: int) -> pa.Table:
    """The output's rows; ``top_labels``/``top_scores`` with top_k > 1, ``error`` if some item failed."""
    columns = {
        "item_id": pa.array(cols["item_id"], pa.string()),
        "label": pa.array(cols["label"], label_type),
        "confidence": pa.array(cols["confidence"], pa.float64()),
    }
    if top_k > 1:
        columns["top_labels"] = pa.array(cols["top_labels"], pa.list_(pa.string()))
        columns["top_scores"] = pa.array(cols["top_scores"], pa.list_(pa.float64()))
    if any(e is not None for e in cols["error"]):
        columns["error"] = pa.array(cols["error"], pa.string())
    columns["task_index"] = pa.array(cols["task_index"], pa.int32())
    columns["worker"] = pa.array(cols["worker"], pa.string())
    return pa.table(columns)


def _label_counts(cols: dict[str, list[Any]], truth: np.ndarray, strings: bool, top_k: int) -> dict[str, Any]:
    """The counts behind a piece's accuracy. Labels are compared with the truth as ints if every label
    of the job is an int, else as strings, which another piece may decide: a piece of ints counts
    both ways and finish_figures takes the job's (a float or text truth compares otherwise)."""
    as_strings = np.array([str(v) for v in cols["label"]]) == truth.astype(str)
    as_ints = None if strings else np.array([v if v is not None else -(2**62) for v in cols["label"]]) == truth
    counts: dict[str, Any] = {
        _STRINGS: strings,
        "_correct_as_strings": int(as_strings.sum()),
        "_correct_as_ints": 0 if as_ints is None else int(as_ints.sum()),
        "labelled_items": int(len(truth)),
    }
    if top_k > 1:
        counts["_top_k_correct"] = sum(t is not None and str(y) in t for t, y in zip(cols["top_labels"], truth.tolist()))
    return counts
