"""The embedder on OpenVINO: the index build's and the query's CPU backend (`embed_backend: openvino`).

    from retriever.openvino_embedder import OpenVinoEmbedder
    model = OpenVinoEmbedder.load("artifacts/index/embedder", threads=2, throughput=True)
    vectors = model.encode(passages, batch_size=16, normalize_embeddings=True)

A sentence-transformers model of the shape Transformer -> mean Pooling (-> Normalize) (all-MiniLM-L6-v2 and the
embedder `medcite train-retriever` tunes from it) is converted once with `openvino.convert_model` from its PyTorch
weights (no ONNX step) and saved uncompressed beside the model, in `<model dir>/openvino/` (a folder the model's
checksum skips, so an index manifest still names the same weights). Pooling and normalisation are numpy here.

Precision: on a CPU that computes in bfloat16 (AMX / AVX512-BF16: OpenVINO lists "BF16" among the CPU's
optimization capabilities), matrix products run in bf16 with fp32 accumulation; elsewhere in fp32. Measured on 384
real passages (benchmarks/embedding.py): cosine to the sentence-transformers fp32 vectors 0.99999 (min 0.99998),
where onnxruntime's dynamic int8 reached 0.995 per channel (0.948 per tensor) and static int8 (QDQ, calibrated on
passages) 0.947; and 3.5-3.9x the throughput of sentence-transformers' fp32 encode, against 2.0x for the best
int8. `optimum` is not used: installing it downgrades transformers below what sentence-transformers needs.

The index build runs in OpenVINO's throughput mode (one stream per core, requests in flight while the next batch
is tokenized); queries in latency mode (all cores on one request). Both run the same converted model, so passage
and query vectors come from the same arithmetic; the manifest records the export's sha256 and the precision.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path

from core.errors import ModelLoadError

EXPORT_DIR = "openvino"
EXPORT_XML = "medcite_model.xml"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _modules(root: Path) -> list[dict]:
    path = root / "modules.json"
    if not path.is_file():
        raise ModelLoadError(f"{root} is not a sentence-transformers model directory (no modules.json)")
    return json.loads(path.read_text())


def check_convertible(model_dir: str | Path) -> int:
    """The model's max_seq_length, after checking it is Transformer -> mean Pooling (-> Normalize): the shape this
    backend reproduces. Raises ModelLoadError naming the torch backend otherwise."""
    root = Path(model_dir)
    modules = _modules(root)
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    mean = False
    if len(modules) > 1 and kinds[1] == "Pooling":
        cfg = json.loads((root / modules[1]["path"] / "config.json").read_text())
        if "pooling_mode" in cfg:  # sentence-transformers >= 5
            mean = cfg["pooling_mode"] == "mean" or cfg["pooling_mode"] == ["mean"]
        else:  # older configs: one flag per mode
            modes = {k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True}
            mean = modes == {"pooling_mode_mean_tokens"}
    if kinds[:2] != ["Transformer", "Pooling"] or not mean or set(kinds[2:]) - {"Normalize"}:
        raise ModelLoadError(f"the openvino embed backend reproduces Transformer -> mean Pooling (-> Normalize) "
                             f"models; {root} is {' -> '.join(kinds)}: use embed_backend torch")
    return max_seq_length(root)


def max_seq_length(root: Path) -> int:
    """Where sentence-transformers truncates: sentence_bert_config.json's max_seq_length (older saves), else the
    tokenizer's model_max_length (sentence-transformers 6 saves it there), never past the model's position
    embeddings (a longer input would fail inside the converted model)."""
    def read(name: str) -> dict:
        path = root / name
        return json.loads(path.read_text()) if path.is_file() else {}

    limit = int(read("config.json").get("max_position_embeddings", 512))
    length = read("sentence_bert_config.json").get("max_seq_length") or read("tokenizer_config.json").get(
        "model_max_length") or limit
    return min(int(length), limit)


def openvino():
    """The openvino module, imported without its usage telemetry. `import openvino` loads openvino_telemetry, and
    its model converter then sends usage events to Google Analytics unless a consent file in the user's home says
    no; without that package it uses its own no-op stub. A medical service phones nowhere, so the package is
    blocked before openvino is first imported (a process that imported openvino earlier keeps what it has)."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino as ov

    return ov


def export_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / EXPORT_DIR / EXPORT_XML


def convert(model_dir: str | Path) -> Path:
    """The model's OpenVINO IR (`openvino/medcite_model.xml` and `.bin`), converted on first use (a few seconds for
    MiniLM), then reused. The .bin is renamed into place before the .xml, so an .xml present means a whole export."""
    root = Path(model_dir)
    xml = export_path(root)
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    check_convertible(root)
    import tempfile

    ov = openvino()
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(root))
    sample = tokenizer(["a short one", "a somewhat longer example sentence"], padding=True, return_tensors="pt")
    if "token_type_ids" not in sample:
        raise ModelLoadError(f"the openvino embed backend needs a BERT-style tokenizer (token_type_ids); {root} has "
                             f"none: use embed_backend torch")
    try:
        model = AutoModel.from_pretrained(str(root)).eval()
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer's notes on transformers' mask code: its shape tests hold for every batch (padding-invariance
            # is tested), so they are noise in a build's output
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            converted = ov.convert_model(model, example_input={k: sample[k] for k in _INPUTS})
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"could not convert {root} for OpenVINO: {str(e).splitlines()[0]}") from None
    xml.parent.mkdir(exist_ok=True)
    for stale in xml.parent.glob(".convert-*"):  # a conversion killed before its files were renamed into place
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".convert-") as tmp:
        part = Path(tmp) / EXPORT_XML
        ov.save_model(converted, str(part), compress_to_fp16=False)  # fp16 weights would cost fidelity for nothing
        os.replace(part.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(part, xml)
    return xml


def export_sha256(model_dir: str | Path) -> str:
    """sha256 over the export's .xml and .bin: what an index manifest records and search checks."""
    xml = export_path(model_dir)
    digest = hashlib.sha256()
    for p in (xml, xml.with_suffix(".bin")):
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def cpu_precision() -> str:
    """bf16 where OpenVINO reports the CPU computes in it natively, else f32."""
    return "bf16" if "BF16" in openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"


class OpenVinoEmbedder:
    """The part of SentenceTransformer the project calls (encode, tokenizer, max_seq_length,
    get_embedding_dimension) on the converted model. Tokenization is the model's own tokenizer with
    sentence-transformers' truncation; mean pooling over the attention mask; L2 normalisation on request.
    Thread-safe: concurrent `encode` calls take turns (a query is one short request)."""

    pipelined = True
    """encode takes a whole shard and keeps batches in flight (index_build.shards.encode_shard)."""

    def __init__(self, model_dir: str | Path, threads: int = 0, throughput: bool = False,
                 precision: str = "") -> None:
        try:
            ov = openvino()
        except ImportError:
            raise ModelLoadError("the openvino embed backend needs the openvino package: pip install openvino; or "
                                 "rebuild the index with embed_backend torch") from None
        from transformers import AutoTokenizer

        self.max_seq_length = check_convertible(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.precision = precision or cpu_precision()
        xml = convert(model_dir)
        cores = threads or os.cpu_count() or 1
        config = {"INFERENCE_PRECISION_HINT": self.precision, "INFERENCE_NUM_THREADS": cores,
                  "PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY"}
        try:
            self._compiled = ov.Core().compile_model(str(xml), "CPU", config)
        except RuntimeError as e:
            raise ModelLoadError(f"could not load {xml}: {str(e).splitlines()[0]}") from None
        requests = self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") if throughput else 1
        # one synchronous request per stream, each driven by its own thread (infer releases the GIL).
        # AsyncInferQueue was tried first and failed a batch longer than the one before it on the same request
        # ("Eltwise shape infer ... mismatch" in the embeddings' Add; tests/test_fuzz.py found it)
        self._requests = [self._compiled.create_infer_request() for _ in range(max(1, int(requests)))]
        self._dim = int(self._compiled.outputs[0].get_partial_shape()[-1].get_length())
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model_dir: str | Path, threads: int = 0, throughput: bool = False,
             precision: str = "") -> OpenVinoEmbedder:
        return cls(model_dir, threads, throughput, precision)

    def get_embedding_dimension(self) -> int:
        return self._dim

    def encode(self, texts: list[str] | str, batch_size: int = 32, normalize_embeddings: bool = False,
               convert_to_numpy: bool = True, show_progress_bar: bool = False, on_batch=None, **_):
        """Vectors in input order (one vector for one string). Batches are formed longest first, as
        sentence-transformers does; in throughput mode up to one batch per stream is in flight."""
        import numpy as np

        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        order = sorted(range(len(items)), key=lambda i: -len(items[i]))

        batches = [order[b:b + batch_size] for b in range(0, len(order), max(1, batch_size))]

        def run(request, mine: list[list[int]]) -> None:
            for idx in mine:
                enc = self.tokenizer([items[i].strip() for i in idx], padding=True, truncation="longest_first",
                                     max_length=self.max_seq_length, return_tensors="np")
                request.infer({k: enc[k].astype(np.int64) for k in _INPUTS})
                hidden = request.get_output_tensor(0).data
                mask = enc["attention_mask"][..., None].astype(np.float32)
                vec = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
                if normalize_embeddings:
                    vec /= np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
                out[idx] = vec
                if on_batch is not None:
                    on_batch(len(idx))

        with self._lock:
            n = min(len(self._requests), len(batches))
            if n <= 1:
                run(self._requests[0], batches)
            else:  # batch j goes to request j mod n: each request's batches in order, the requests side by side
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(n) as pool:
                    for f in [pool.submit(run, self._requests[w], batches[w::n]) for w in range(n)]:
                        f.result()
        return out[0] if single else out
