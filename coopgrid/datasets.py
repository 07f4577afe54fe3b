"""Datasets: what a job's items are, and how a submitter names them.

A dataset travels to the coordinator as one .npz blob holding ``x`` (one row
per item), optionally ``y`` (ground-truth labels, used only for the job's
accuracy figure) and ``ids`` (item ids; default ``item-<n>``).

Names a submitter can give (``coopgrid submit --dataset ...``):

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images);
* ``digits:N``: N digit images, the set repeated with small deterministic
  augmentations (seeded noise and contrast jitter), e.g. ``digits:20000``;
* ``sequence:N``: the integers 0..N-1, one per item (for ``echo``);
* a ``.npz`` file with ``x`` (and optionally ``y``, ``ids``);
* a directory of PNG/JPEG images, read as grayscale and resized to the
  model's input image size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coopgrid.errors import DatasetError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.ndim < 1 or len(self.x) == 0:
            raise DatasetError("the dataset has no items")
        for name, arr in (("y", self.y), ("ids", self.ids)):
            if arr is not None and len(arr) != len(self.x):
                raise DatasetError(f"the dataset's {name} has {len(arr)} entries for {len(self.x)} items")

    def __len__(self) -> int:
        return len(self.x)

    def item_ids(self) -> list[str]:
        if self.ids is not None:
            return [str(i) for i in self.ids]
        return [f"item-{i}" for i in range(len(self.x))]

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        arrays = {"x": self.x}
        if self.y is not None:
            arrays["y"] = self.y
        if self.ids is not None:
            arrays["ids"] = self.ids.astype(str)
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_npz(cls, data: bytes | Path) -> Dataset:
        try:
            with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as npz:
                if "x" not in npz:
                    raise DatasetError("the .npz has no array named 'x' (one row per item)")
                return cls(
                    x=npz["x"],
                    y=npz["y"] if "y" in npz else None,
                    ids=npz["ids"] if "ids" in npz else None,
                )
        except (ValueError, OSError, EOFError) as exc:
            raise DatasetError(f"cannot read the dataset as .npz: {exc}") from exc


def digits(n: int | None = None) -> Dataset:
    """scikit-learn's digits; with ``n``, repeated with deterministic augmentations."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    labels = d.target.astype(np.int64)
    if n is None:
        return Dataset(images.reshape(len(images), -1), labels, np.array([f"digits-{i}" for i in range(len(images))]))
    if n < 1:
        raise DatasetError("digits:N needs N >= 1")
    base = len(images)
    copies = -(-n // base)
    xs, ys, ids = [], [], []
    for k in range(copies):
        copy = augment(images, k) if k else images  # copy 0 is the original
        xs.append(copy.reshape(base, -1))
        ys.append(labels)
        ids.extend(f"digits-{k}-{i}" for i in range(base))
    return Dataset(np.concatenate(xs)[:n], np.concatenate(ys)[:n], np.array(ids[:n]))


def augment(images: np.ndarray, seed: int) -> np.ndarray:
    """Seeded noise and contrast jitter on 0..16 digit images (any shape)."""
    rng = np.random.default_rng(seed)
    contrast = rng.uniform(0.85, 1.15, size=(len(images),) + (1,) * (images.ndim - 1)).astype(np.float32)
    noise = rng.normal(0.0, 0.6, size=images.shape).astype(np.float32)
    return np.clip(images * contrast + noise, 0.0, 16.0)


def sequence(n: int) -> Dataset:
    if n < 1:
        raise DatasetError("sequence:N needs N >= 1")
    return Dataset(np.arange(n, dtype=np.int64).reshape(n, 1))


def images_dir(path: Path, size: tuple[int, int], value_max: float) -> Dataset:
    """Grayscale images resized to ``size``, dark background, ink scaled to 0..value_max."""
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"{path} holds no PNG or JPEG images")
    rows = []
    for f in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("L").resize((size[1], size[0]), Image.Resampling.BILINEAR), np.float32)
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"cannot decode image {f.name}: {exc}") from exc
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
        if border.mean() > 127:  # dark ink on a light page: turn it into light ink on dark
            arr = 255.0 - arr
        rows.append(arr.reshape(-1) * (value_max / 255.0))
    return Dataset(np.stack(rows), None, np.array([f.name for f in files]))


def load(spec: str, image_size: tuple[int, int] = (8, 8), value_max: float = 16.0) -> Dataset:
    """Resolve a dataset name or path (see the module docstring)."""
    name, _, arg = spec.partition(":")
    if name in ("digits", "sequence") and not Path(spec).exists():
        if arg and not arg.isdigit():
            raise DatasetError(f"{spec!r}: the part after ':' must be a number of items")
        if name == "digits":
            return digits(int(arg) if arg else None)
        if not arg:
            raise DatasetError("sequence needs a length: sequence:N")
        return sequence(int(arg))
    path = Path(spec)
    if path.is_dir():
        return images_dir(path, image_size, value_max)
    if path.suffix == ".npz" and path.is_file():
        return Dataset.from_npz(path)
    raise DatasetError(
        f"unknown dataset {spec!r}: give digits, digits:N, sequence:N, an .npz file or a directory of images"
    )
