"""Central training: the models the grid runs are trained here, then published.

``train_digits`` fits a small neural network on scikit-learn's bundled
digits (a stratified held-out test split measures it), and exports it to
ONNX with skl2onnx (zipmap off, so probabilities come out as a tensor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class TrainedModel:
    onnx: bytes
    name: str
    task_type: str
    input: dict[str, Any]
    classes: list[Any]
    metrics: dict[str, float]
    framework: str

    def spec(self, sha256: str) -> dict[str, Any]:
        return {
            "sha256": sha256,
            "name": self.name,
            "task_type": self.task_type,
            "input": self.input,
            "classes": self.classes,
            "metrics": self.metrics,
            "framework": self.framework,
        }


def train_digits(seed: int = 0) -> TrainedModel:
    import onnxruntime as ort
    import sklearn
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_digits()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=seed),
    )
    # train on noisy, contrast-jittered copies too: the grid will see such images
    from coopgrid.datasets import augment

    copies = [x_train] + [augment(x_train, 1000 + k) for k in range(3)]
    model.fit(np.concatenate(copies), np.tile(y_train, len(copies)))
    onx = to_onnx(model, x_train[:1], options={MLPClassifier: {"zipmap": False}}, target_opset=17)
    onnx_bytes = onx.SerializeToString()
    # measure the exported model, not the scikit-learn object: that is what workers run
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    labels = sess.run(None, {sess.get_inputs()[0].name: x_test})[0]
    accuracy = float((np.asarray(labels) == y_test).mean())
    return TrainedModel(
        onnx=onnx_bytes,
        name="digits",
        task_type="classify",
        input={"shape": [64], "dtype": "float32", "image_size": [8, 8], "value_max": 16.0},
        classes=list(range(10)),
        metrics={
            "test_accuracy": round(accuracy, 6),
            "train_items": float(len(x_train) * len(copies)),
            "test_items": float(len(x_test)),
        },
        framework=f"scikit-learn {sklearn.__version__} MLPClassifier(64) via skl2onnx",
    )
