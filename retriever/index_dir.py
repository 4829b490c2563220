"""The index directory format: what files it holds, the manifest, atomic writes, and loading checks.

    artifacts/index/
      manifest.json     written last: fingerprint, embedder (name, dim, checksum), corpus hashes, counts,
                        cleaning counts, resolved config, library versions, build time, file sizes
      passages.jsonl    one Passage per line; line i is FAISS id i and BM25 doc i
      dense.faiss       FAISS index over L2-normalised title+text embeddings (inner product = cosine)
      dense-refine.faiss  only with faiss_refine: the float vectors (IndexFlatIP), memory-mapped at load, that
                        re-rank a compressed index's candidates by exact inner product
      bm25/             bm25s index (numpy arrays + JSON; no pickle)
      embedder/         copy of the sentence-transformers model used, so queries always embed the same way
      duplicates.json   {dropped record id: kept record id} for exact-duplicate answers

index_build writes it; retriever.search reads it. `check_index_dir` says exactly what is missing and which
command makes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import IndexCorruptError, IndexNotFoundError
from core.types import Passage

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PASSAGES = "passages.jsonl"
DENSE = "dense.faiss"
DENSE_REFINE = "dense-refine.faiss"
BM25_DIR = "bm25"
EMBEDDER_DIR = "embedder"
DUPLICATES = "duplicates.json"
BUILD_HINT = "build it with `medcite index`"


def file_sizes(root: Path) -> dict[str, int]:
    """Size of every file under root except the manifest: a cheap completeness check at load time."""
    return {str(p.relative_to(root)): p.stat().st_size
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def read_passages(root: str | Path) -> list[Passage]:
    """The passages of an index, or a one-line error naming the file, the line and the command that rebuilds it
    (a file of the right size can still be corrupted inside)."""
    path = Path(root) / PASSAGES
    out = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                out.append(Passage(**json.loads(raw.decode("utf-8"))))
            except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
                why = str(e).splitlines()[0] if not isinstance(e, TypeError) else "not a passage record"
                raise IndexCorruptError(f"{path} line {n} is corrupted ({why}); rebuild with "
                                        f"`medcite index --out {root}`") from None
    return out


def read_json(root: str | Path, name: str) -> Any:
    """One JSON file of an index, or a one-line error naming it and the command that rebuilds it."""
    path = Path(root) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexCorruptError(f"{path} is corrupted ({str(e).splitlines()[0]}); rebuild with "
                                f"`medcite index --out {root}`") from None


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a finished index, or a one-line error naming the command that makes one."""
    root = Path(root)
    if not root.is_dir():
        raise IndexNotFoundError(f"no index at {root}; {BUILD_HINT} (or pass --index)")
    path = root / MANIFEST
    if not path.is_file():
        raise IndexCorruptError(f"{root} has no {MANIFEST} (an unfinished build?); {BUILD_HINT} --out {root}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IndexCorruptError(f"{path} is not valid JSON; rebuild with `medcite index --out {root}`") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorruptError(f"{root} has index format {manifest.get('format_version')}, this medcite reads "
                                f"{FORMAT_VERSION}; rebuild with `medcite index --out {root}`")
    return manifest


def check_index_dir(root: str | Path) -> dict[str, Any]:
    """read_manifest, then every file the manifest lists must exist with its recorded size."""
    root = Path(root)
    manifest = read_manifest(root)
    for name, size in manifest.get("files", {}).items():
        p = root / name
        if not p.is_file():
            raise IndexCorruptError(f"{root} is missing {name}; rebuild with `medcite index --out {root}`")
        if p.stat().st_size != size:
            raise IndexCorruptError(f"{root}/{name} has {p.stat().st_size} bytes, manifest says {size}; "
                                    f"rebuild with `medcite index --out {root}`")
    return manifest


def embed_text(p: Passage) -> str:
    """What gets embedded, BM25-indexed and reranked: title, then the passage (never the MedQuAD question)."""
    return f"{p.title}\n{p.text}"
