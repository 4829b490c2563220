"""The embedding stage of an index build: passages in length-sorted shards, each encoded and written as it
finishes (a killed build resumes at the first missing shard), then assembled into one matrix. Shared by the local
build and the Ray engine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core.errors import IndexCorruptError
from core.files import atomic_path
from core.progress import stage_prefix
from index_build.config import IndexConfig


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

    if getattr(model, "pipelined", False):  # OpenVINO: the whole shard in one call, batches in flight together
        return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, on_batch=on_batch)
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
    bar = tqdm(total=len(texts), initial=done, unit="passages", desc=stage_prefix() + "embedding", mininterval=2.0,
               file=sys.stderr, disable=not progress)
    for i, ids in enumerate(shards):
        path = shard_dir / f"{i:05d}.npy"
        if not path.is_file():
            write_shard(path, encode_shard(model, [texts[j] for j in ids], cfg.batch_size, bar.update))
    bar.close()
    return assemble_shards(shards, shard_dir, len(texts), model.get_embedding_dimension())
