"""Writing an index's search structures: the FAISS index (flat, HNSW, IVF-PQ or a factory string, with an optional
refine store of the float vectors) and the BM25 index."""

from __future__ import annotations

from pathlib import Path

from core.errors import ConfigError
from core.files import atomic_path, staging_dir
from index_build.config import IndexConfig

BM25_TOKENIZER = {"stemmer": "english", "stopwords": "en"}
"""How BM25 tokenizes passages (and so queries): recorded in the manifest."""


def build_faiss(cfg: IndexConfig, vectors):
    import faiss

    n, dim = vectors.shape
    if cfg.faiss_index == "factory":
        return build_factory(vectors, cfg.faiss_factory, cfg.faiss_search, cfg.train_sample, cfg.shard_size)
    if cfg.faiss_index == "flat":
        index = faiss.IndexFlatIP(dim)
    elif cfg.faiss_index == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.hnsw.efSearch = cfg.hnsw_ef_search
    else:
        if dim % cfg.pq_m:
            raise ConfigError(f"pq_m={cfg.pq_m} must divide the embedding dimension {dim}")
        nlist = max(1, min(cfg.ivf_nlist, n // 39))
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, cfg.pq_m, cfg.pq_nbits, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(cfg.ivf_nprobe, nlist)
    index.add(vectors)
    return index


def ivf_lists(n: int) -> int:
    """FAISS's guideline for the number of IVF lists: ~4 x sqrt(n), here a power of two, and >= 39 training
    points per list."""
    import math

    return max(1, min(2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))), n // 39))


def build_factory(vectors, factory: str, search: str = "", train_sample: int = 100_000, shard: int = 4096,
                  seed: int = 0):
    """An index from a FAISS factory string: trained once on a seeded sample, then added shard by shard (the
    memory for codes grows with each shard, the float vectors are never all copied), search parameters set."""
    import faiss
    import numpy as np

    n, dim = vectors.shape
    try:
        index = faiss.index_factory(dim, factory.format(nlist=ivf_lists(n)), faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ConfigError(f"faiss_factory {factory!r}: {str(e).splitlines()[-1]}") from None
    if not index.is_trained:
        rows = np.random.default_rng(seed).permutation(n)[: min(n, train_sample)]
        index.train(np.ascontiguousarray(vectors[np.sort(rows)]))
    for start in range(0, n, shard):
        index.add(np.ascontiguousarray(vectors[start:start + shard]))
    if search:
        try:
            faiss.ParameterSpace().set_index_parameters(index, search)
        except RuntimeError as e:
            raise ConfigError(f"faiss_search {search!r}: {str(e).splitlines()[-1]}") from None
    return index


def write_refine(vectors, dest: Path, shard: int = 4096) -> None:
    """The float vectors as an IndexFlatIP beside a compressed index (faiss_refine): retriever.search maps it
    read-only and wraps both in a faiss.IndexRefine, which reads only the candidates' rows."""
    import faiss
    import numpy as np

    flat = faiss.IndexFlatIP(vectors.shape[1])
    for start in range(0, len(vectors), shard):
        flat.add(np.ascontiguousarray(vectors[start:start + shard]))
    with atomic_path(dest) as tmp:
        faiss.write_index(flat, str(tmp))


def build_bm25(texts: list[str], dest: Path) -> None:
    import bm25s
    import Stemmer

    words = bm25s.tokenize(texts, stopwords=BM25_TOKENIZER["stopwords"], return_ids=False,
                           stemmer=Stemmer.Stemmer(BM25_TOKENIZER["stemmer"]), show_progress=False)
    # bm25s numbers its vocabulary in set order, which changes with the hash seed; a sorted vocabulary makes
    # the saved index byte-identical across runs (and so across an interrupted and an uninterrupted build).
    vocab = {w: i for i, w in enumerate(sorted({w for doc in words for w in doc}))}
    tokens = bm25s.tokenization.Tokenized(ids=[[vocab[w] for w in doc] for doc in words], vocab=vocab)
    bm = bm25s.BM25()
    bm.index(tokens, show_progress=False)
    with staging_dir(dest) as tmp:
        bm.save(str(tmp), show_progress=False)
