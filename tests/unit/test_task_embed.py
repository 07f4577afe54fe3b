import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from coopgrid import datasets, tasks
from coopgrid.datasets import Dataset
from coopgrid.errors import InvalidInput
from coopgrid.registry.embed import build_encoder_onnx, tiny_encoder, with_tokenizer
from coopgrid.task_demos import sentences
from coopgrid.tasks.base import run_local

CORPUS = sentences(60, seed=5)


@pytest.fixture(scope="module")
def tokenizer():
    """A small word-level tokenizer, built here with the tokenizers library."""
    words = sorted({w for s in CORPUS for w in s.lower().replace(".", " . ").replace("!", " ! ").replace("?", " ? ").split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


@pytest.fixture(scope="module")
def encoder(tokenizer):
    table = np.random.default_rng(1).normal(size=(tokenizer.get_vocab_size(), 24)).astype(np.float32)
    return table, build_encoder_onnx(table, tokenizer.to_str())


def reference(tokenizer, table, texts):
    rows = []
    for t in texts:
        ids = tokenizer.encode(t).ids
        v = table[ids].mean(axis=0) if ids else np.zeros(table.shape[1], np.float32)
        rows.append(v / max(np.linalg.norm(v), 1e-12))
    return np.array(rows)


def test_embeddings_match_a_direct_computation_and_a_bad_item_fails_alone(tokenizer, encoder, tmp_path):
    table, onnx_bytes = encoder
    items = [s.encode() for s in CORPUS] + [b"\xff\xfe broken"]
    data = Dataset.from_items(items, "text", [f"s{i}" for i in range(len(items))])
    t = tasks.get("embed")
    figures, outputs = run_local(t, data, 7, {"batch_size": 4}, onnx_bytes, {"input": {"max_length": 64}}, out=tmp_path / "e.parquet")
    assert figures == {"dim": 24, "items_embedded": 60, "item_errors": 1}
    out = pq.read_table(tmp_path / "e.parquet")
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 24)
    got = out.to_pydict()
    assert got["item_id"] == data.item_ids()
    assert got["embedding"][-1] is None and "not UTF-8" in got["error"][-1]
    emb = np.array(got["embedding"][:-1], dtype=np.float32)
    np.testing.assert_allclose(emb, reference(tokenizer, table, CORPUS), atol=1e-5)


def test_an_item_s_embedding_does_not_depend_on_its_batch(encoder):
    _, onnx_bytes = encoder
    data = Dataset.from_items([s.encode() for s in CORPUS], "text")
    t = tasks.get("embed")
    _, small = run_local(t, data, 3, {"batch_size": 2}, onnx_bytes)
    _, big = run_local(t, data, 100, {"batch_size": 64}, onnx_bytes)
    a = np.concatenate([o.output["emb"] for o in small])
    b = big[0].output["emb"]
    assert np.min((a * b).sum(axis=1)) > 0.99999


def test_agree_is_cosine_per_row(encoder):
    _, onnx_bytes = encoder
    t = tasks.get("embed")
    _, (o,) = run_local(t, Dataset.from_items([s.encode() for s in CORPUS[:10]], "text"), 10, {}, onnx_bytes)
    a = o.output
    noisy = {"emb": a["emb"] + np.float32(1e-4), "errors": []}
    assert t.agree(a, noisy)
    swapped = {"emb": a["emb"][::-1].copy(), "errors": []}
    assert not t.agree(a, swapped)
    assert not t.agree(a, {"emb": a["emb"], "errors": [[0, "x"]]})
    assert t.decode(t.canonical(a))["emb"].tobytes() == a["emb"].tobytes()


def test_token_state_models_are_pooled_on_the_worker(tokenizer, encoder):
    table, onnx_bytes = encoder
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["states"], axis=0)],
        "states",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["b", "t", 24])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    states = with_tokenizer(model.SerializeToString(), tokenizer.to_str())
    data = Dataset.from_items([s.encode() for s in CORPUS[:9]], "text")
    t = tasks.get("embed")
    _, (pooled,) = run_local(t, data, 9, {"batch_size": 4}, states)
    _, (direct,) = run_local(t, data, 9, {"batch_size": 4}, onnx_bytes)
    np.testing.assert_allclose(pooled.output["emb"], direct.output["emb"], atol=1e-5)


def test_text_columns_of_csv_and_parquet(encoder, tmp_path):
    _, onnx_bytes = encoder
    (tmp_path / "c.csv").write_text("id,text\n1,grid worker\n2,\"quoted, text\"\n3\n")
    t = tasks.get("embed")
    data = datasets.load_items(tmp_path / "c.csv")
    with pytest.raises(InvalidInput, match="params.column, one of: id, text"):
        run_local(t, data, 10, {}, onnx_bytes)
    figures, (o,) = run_local(t, data, 10, {"column": "text"}, onnx_bytes)
    assert figures["item_errors"] == 1 and "1 fields, the header has 2" in o.output["errors"][0][1]
    pq.write_table(pa.table({"body": ["a grid", None, "the model"], "n": [1, 2, 3]}), tmp_path / "t.parquet")
    figures, (o,) = run_local(t, datasets.load_items(tmp_path / "t.parquet"), 10, {"column": "body"}, onnx_bytes)
    assert figures["items_embedded"] == 2 and o.output["errors"] == [[1, "no text (null)"]]


def test_a_model_without_a_tokenizer_is_refused_clearly(encoder):
    _, onnx_bytes = encoder
    model = onnx.load_from_string(onnx_bytes)
    del model.metadata_props[:]
    with pytest.raises(InvalidInput, match="no tokenizer"):
        tasks.get("embed").load_model(model.SerializeToString(), {})


def test_tiny_encoder_is_a_publishable_model():
    m = tiny_encoder(CORPUS, dim=16)
    spec = m.spec("0" * 64)
    assert spec["task_type"] == "embed" and spec["input"]["dim"] == 16
    enc = tasks.get("embed").load_model(m.onnx, spec)
    emb = enc.encode(CORPUS[:3], 8)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_a_job_whose_every_item_failed_still_reduces(encoder, tmp_path):
    # with nothing embedded (dim 0) the reduce raised (Arrow makes no fixed-size list of size 0 from
    # values), so such a job was never finished; so did a job without any accepted output
    _, onnx_bytes = encoder
    t = tasks.get("embed")
    data = Dataset.from_items([b"\xff\xfe broken"] * 3, "text")
    figures, _ = run_local(t, data, 2, {}, onnx_bytes, out=tmp_path / "e.parquet")
    assert figures == {"dim": 0, "items_embedded": 0, "item_errors": 3}
    out = pq.read_table(tmp_path / "e.parquet")
    assert out.column("item_id").to_pylist() == data.item_ids() and out.column("embedding").null_count == 3
    assert all("not UTF-8" in e for e in out.column("error").to_pylist())
    assert t.reduce([], data, t.validate_params({}), tmp_path / "none.parquet") == {"dim": 0, "items_embedded": 0, "item_errors": 0}
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0
