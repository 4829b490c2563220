"""The OpenVINO embed backend on a tiny sentence-transformers model built in code: its vectors against PyTorch's,
batch-invariance, the cached conversion, the models it refuses, and an index built and searched with it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import IndexCorruptError, ModelLoadError
from index_build.build import build_index
from retriever.embedder import dir_checksum, load_embedder
from retriever.index_dir import embed_text
from retriever.openvino_embedder import OpenVinoEmbedder, convert, cpu_precision, export_path
from retriever.search import IndexRetriever

TEXTS = ["word " * 400,  # past the model's 128 tokens: truncated as sentence-transformers does
         "Gout is treated with anti-inflammatory drugs such as colchicine and NSAIDs.",
         "What are the symptoms of Ewing sarcoma?",
         "short",
         "Hypertension, or high blood pressure, rarely causes symptoms until it damages the heart, brain or kidneys. "
         * 3]


@pytest.fixture()
def model_dir(tmp_path, tiny_embedder) -> Path:
    out = tmp_path / "embedder"
    shutil.copytree(tiny_embedder, out)
    return out


def test_vectors_match_pytorch_in_order_whatever_the_batch(model_dir):
    reference = load_embedder(str(model_dir), 1).encode(TEXTS, normalize_embeddings=True)
    f32 = OpenVinoEmbedder(model_dir, threads=1, precision="f32")
    vectors = f32.encode(TEXTS, batch_size=2, normalize_embeddings=True)
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (vectors * reference).sum(1).min() > 0.99999  # row i is text i's vector: the batches were re-ordered
    # padding beside longer texts changes nothing: each text alone gives its row; one string gives one vector
    alone = np.stack([f32.encode(t, normalize_embeddings=True) for t in reversed(TEXTS)])[::-1]  # short, then long
    assert np.allclose(alone, vectors, atol=1e-5)
    # the throughput mode (requests in flight) returns the same rows
    pipelined = OpenVinoEmbedder(model_dir, threads=2, throughput=True, precision="f32")
    seen: list[int] = []
    assert np.allclose(pipelined.encode(TEXTS, batch_size=1, normalize_embeddings=True, on_batch=seen.append),
                       vectors, atol=1e-5)
    assert sum(seen) == len(TEXTS)
    if cpu_precision() == "bf16":  # bf16 matrix products, fp32 accumulation: close, not equal
        bf16 = OpenVinoEmbedder(model_dir, threads=1, precision="bf16").encode(TEXTS, normalize_embeddings=True)
        assert (bf16 * reference).sum(1).min() > 0.999


def test_conversion_is_cached_and_outside_the_model_checksum(model_dir):
    before = dir_checksum(model_dir)
    xml = convert(model_dir)
    assert xml == export_path(model_dir) and xml.with_suffix(".bin").is_file()
    stamp = xml.stat().st_mtime_ns
    assert convert(model_dir).stat().st_mtime_ns == stamp  # reused, not converted again
    assert dir_checksum(model_dir) == before  # the index manifest still names the same weights
    assert not [p for p in xml.parent.iterdir() if p.name.startswith(".")]  # no half-written leftovers
    # the converter ran with its no-op telemetry stub: no usage events leave the machine
    from openvino.tools.ovc import telemetry_utils

    assert telemetry_utils.tm.__name__ == "openvino.tools.ovc.telemetry_stub"


def test_a_model_it_cannot_reproduce_is_refused_with_the_fix(model_dir):
    pooling = model_dir / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text())
    cfg["pooling_mode"] = "cls"
    pooling.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="embed_backend torch"):
        OpenVinoEmbedder(model_dir, threads=1)
    with pytest.raises(ModelLoadError, match="no modules.json"):
        OpenVinoEmbedder(model_dir / "1_Pooling", threads=1)


def test_an_index_is_embedded_and_queried_on_one_backend(index_config):
    cfg = index_config()
    assert cfg.embed_backend == "openvino"  # the default
    build_index(cfg, log=lambda _: None)
    out = Path(cfg.out)
    record = json.loads((out / "manifest.json").read_text())["embedder"]
    assert record["backend"] == "openvino" and record["precision"] in ("bf16", "f32")
    assert len(record["export_sha256"]) == 64
    r = IndexRetriever.load(out)
    assert isinstance(r.embedder, OpenVinoEmbedder) and r.embedder.precision == record["precision"]
    # a query of a passage's own text gets that passage's stored vector: queries and passages share the arithmetic
    for row in (0, 3, len(r.passages) - 1):
        stored = r.dense.reconstruct(row)
        assert float(r.embed([embed_text(r.passages[row])])[0] @ stored) > 0.999
    # the torch index of the same inputs is another index (another fingerprint) and says so in its manifest
    torch_cfg = index_config(out=str(out.parent / "torch"), embed_backend="torch")
    torch_manifest = build_index(torch_cfg, log=lambda _: None).manifest
    assert torch_manifest["embedder"]["backend"] == "torch"
    assert torch_manifest["fingerprint"] != json.loads((out / "manifest.json").read_text())["fingerprint"]
    # a converted model that is not the one the passages were embedded with (same size, other bytes) is refused
    weights = export_path(out / "embedder").with_suffix(".bin")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match="OpenVINO export"):
        IndexRetriever.load(out)
