"""index_build's Ray Data engine: the same index as the local engine, built by a Ray cluster.

    medcite index --engine ray                                   # a Ray instance inside the job (all local cores)
    medcite index --engine ray --ray-address auto                # join the cluster `ray start --head` started
    medcite index --engine ray --ray-address ray://head:10001 --ray-actors 8

What runs where. The driver reads and hashes the corpus files (the fingerprint, which names the resumable build
directory, needs every file's hash before anything else), drops exact duplicate answers (a global step) and
writes the outputs. Ray Data runs the per-record cleaning rules and the chunking in CPU tasks, and the embedding
in a pool of actors (`map_batches` with a callable class, one shard of passages per call, `num_gpus=1` per actor
when the cluster has GPUs). Actors return vectors, the driver writes each finished shard atomically under the
build directory; the embedder travels through Ray's object store (each node unpacks it once into its temp
directory), so no shared filesystem is needed, and a killed driver keeps every finished shard: the rerun
embeds only the missing ones. A killed actor is restarted by Ray and its shard retried; a shard is written once,
by index, so a retried or duplicated result can neither lose nor repeat a passage. Shards, their order (longest
first) and the batches inside them are the local engine's, so the vectors agree with it to fp32 rounding.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path
from typing import Any

from core.corpus import CLEANING_RULES, clean_text, drop_duplicates
from core.errors import ConfigError
from core.progress import stage_prefix
from core.types import Passage, Record
from index_build.config import IndexConfig

# Rows per CPU task of the cleaning and chunking stages: big enough that a task's tokenizer load (~0.1 s) is noise.
_RECORDS_PER_TASK = 2000


def ship_model(model_dir: Path) -> list:
    """The embedder's files in the object store, with their checksum: workers on any node can load it."""
    import ray

    from retriever.embedder import dir_checksum, model_files
    from retriever.openvino_embedder import EXPORT_DIR

    files = [*model_files(model_dir), *sorted((model_dir / EXPORT_DIR).glob("medcite_model.*"))]
    payload = {str(p.relative_to(model_dir)): p.read_bytes() for p in files}
    digest = hashlib.sha256(dir_checksum(model_dir).encode())
    for rel in sorted(payload):  # the OpenVINO export travels too: every actor runs the index's own file
        if rel.startswith(EXPORT_DIR):
            digest.update(rel.encode() + payload[rel])
    return [ray.put(payload), digest.hexdigest()]


def local_model(shipped: list) -> str:
    """This node's copy of a shipped embedder (unpacked once per node, atomically), as a directory path."""
    import tempfile

    import ray

    from core.files import staging_dir

    ref, sha = shipped
    dest = Path(tempfile.gettempdir()) / f"medcite-embedder-{sha[:16]}"
    if not dest.is_dir():
        try:
            with staging_dir(dest) as tmp:
                for rel, data in ray.get(ref).items():
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).write_bytes(data)
        except FileExistsError:  # another worker on this node unpacked it first
            pass
    return str(dest)


@functools.lru_cache(maxsize=2)
def _tokenizer(model_dir: str):
    """The embedder's tokenizer, once per Ray worker process (workers are reused across tasks)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for single-machine mode (its default on macOS and Windows): "0" puts the node on 127.0.0.1."""


def start_local(num_cpus: int | None = None) -> None:
    """A Ray instance for this process alone, its control plane on loopback. Ray's GCS and raylets have no
    authentication, and on Linux a plain `ray.init()` listens on every interface of the machine (an exposed Ray is a
    known way to run code on it); in single-machine mode every Ray process listens on 127.0.0.1 only. No dashboard.
    `address="local"` starts a new instance rather than joining one already running here."""
    import os

    os.environ[LOOPBACK_ENV] = "0"  # read by Ray's constants at import, and by the processes it starts
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # Ray may have been imported before the variable was set
    import stamina

    # Ray gives its raylet a fixed 30 s to register; on a busy machine (an index build beside a test run) it can
    # take longer, and the node start fails with "timed out during startup": start it again, not fail the build
    for attempt in stamina.retry_context(on=_startup_timed_out, attempts=3, wait_initial=1.0, timeout=None):
        with attempt:
            if ray.is_initialized():
                ray.shutdown()
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")


def _startup_timed_out(exc: Exception) -> bool:
    return "timed out during startup" in str(exc)


def connect(cfg: IndexConfig) -> dict[str, Any]:
    """Start Ray on loopback, or join the cluster at `ray_address` (whose network the operator secures: see
    docs/security.md); returns what the embedding stage needs to size its actor pool."""
    try:
        import ray
    except ImportError:
        raise ConfigError("engine ray needs Ray Data: pip install 'medcite[scale]'") from None
    if not ray.is_initialized():
        try:
            if cfg.ray_address:
                ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            else:
                start_local()
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise ConfigError(f"could not join the Ray cluster at {cfg.ray_address!r}: {e}") from None
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines drown the build's own log
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    res = ray.cluster_resources()
    return {"cpus": int(res.get("CPU", 1)), "gpus": int(res.get("GPU", 0))}


def _clean_batch(batch: dict) -> dict:
    texts, rules = [], {r: [] for r in CLEANING_RULES[:-1]}
    for text, focus in zip(batch["text"], batch["focus"], strict=True):
        new, touched = clean_text(str(text), str(focus))
        texts.append(new)
        for r in rules:
            rules[r].append(r in touched)
    return {"pos": batch["pos"], "text": texts, **rules}


def _chunk_batch(batch: dict, model: list, size: int, overlap: int) -> dict:
    from index_build.chunk import record_spans
    from index_build.shards import token_lengths
    from retriever.index_dir import embed_text

    tok = _tokenizer(local_model(model))
    texts = [str(t) for t in batch["text"]]
    out: dict[str, list] = {"pos": [], "n": [], "text": []}
    embedded = []
    for pos, title, text, spans in zip(batch["pos"], batch["title"], texts,
                                       record_spans(texts, tok, size, overlap), strict=True):
        for n, (a, b) in enumerate(spans):
            out["pos"].append(int(pos))
            out["n"].append(n)
            out["text"].append(text[a:b].strip())
            embedded.append(embed_text(Passage("", "", str(title), out["text"][-1], "")))
    # token lengths of what gets embedded: the shard plan orders by them (index_build.build.shard_plan)
    out["tokens"] = token_lengths(tok, embedded)
    return out


def clean_and_chunk(records: list[Record], model_dir: Path, cfg: IndexConfig
                    ) -> tuple[list[Record], dict[str, int], list[Passage], list[int]]:
    """Cleaned, deduplicated records, the cleaning counts, their passages and each passage's token length."""
    from collections import Counter

    import ray.data

    rows = [{"pos": i, "text": r.text, "focus": str(r.meta.get("focus", ""))} for i, r in enumerate(records)]
    cleaned = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // _RECORDS_PER_TASK)) \
        .map_batches(_clean_batch, batch_size=_RECORDS_PER_TASK, batch_format="numpy").take_all()
    counts: Counter[str] = Counter({rule: 0 for rule in CLEANING_RULES})
    for row in cleaned:
        records[int(row["pos"])].text = str(row["text"])
        counts.update(r for r in CLEANING_RULES[:-1] if row[r])
    kept = drop_duplicates(records, counts)

    rows = [{"pos": i, "title": r.title, "text": r.text} for i, r in enumerate(kept)]
    chunks = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // _RECORDS_PER_TASK)) \
        .map_batches(_chunk_batch, batch_size=_RECORDS_PER_TASK, batch_format="numpy",
                     fn_kwargs={"model": ship_model(model_dir), "size": cfg.chunk_tokens,
                                "overlap": cfg.chunk_overlap}).take_all()
    chunks.sort(key=lambda c: (int(c["pos"]), int(c["n"])))  # record order, then window order: the local order
    passages, lengths = [], []
    for c in chunks:
        rec = kept[int(c["pos"])]
        passages.append(Passage(id=f"{rec.id}#{int(c['n'])}", record_id=rec.id, title=rec.title, text=str(c["text"]),
                                source=rec.source, url=rec.url))
        lengths.append(int(c["tokens"]))
    return kept, dict(counts), passages, lengths


class ShardEmbedder:
    """A Ray Data actor: loads the index's embedder once, embeds one shard per call."""

    def __init__(self, model: list, batch_size: int, threads: int, device: str, backend: str = "torch",
                 precision: str = "") -> None:
        from retriever.embedder import load_embedder

        self.model = load_embedder(local_model(model), threads, device=device, backend=backend, throughput=True,
                                   precision=precision)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from index_build.shards import encode_shard

        vectors = [encode_shard(self.model, [str(t) for t in texts], self.batch_size) for texts in batch["texts"]]
        return {"shard": np.asarray(batch["shard"]), "vectors": np.array(vectors, dtype=object)
                if len({v.shape for v in vectors}) > 1 else np.stack(vectors)}


def actor_count(cfg: IndexConfig, session: dict[str, Any]) -> int:
    if cfg.ray_actors:
        return cfg.ray_actors
    return session["gpus"] or max(1, session["cpus"] // max(1, cfg.threads))


def embed(session: dict[str, Any], texts: list[str], lengths: list[int], work: Path, cfg: IndexConfig, log,
          embedder_cls: type = ShardEmbedder, progress: bool = True, precision: str = ""):
    """Embeddings for `texts` in input order: the missing shards through the actor pool, written by the driver."""
    import ray.data
    from tqdm import tqdm

    from index_build.shards import assemble_shards, shard_plan, write_shard

    shards = shard_plan(lengths, cfg.shard_size)
    shard_dir = work / "shards"
    shard_dir.mkdir(exist_ok=True)
    missing = [i for i in range(len(shards)) if not (shard_dir / f"{i:05d}.npy").is_file()]
    done = sum(len(shards[i]) for i in range(len(shards)) if i not in set(missing))
    if done:
        log(f"resuming: {done}/{len(texts)} passages already embedded")
    gpus = session["gpus"] > 0
    actors = actor_count(cfg, session)
    log(f"embedding {len(missing)} shard(s) with {actors} Ray actor(s) on {'GPU' if gpus else 'CPU'}")
    bar = tqdm(total=len(texts), initial=done, unit="passages", desc=stage_prefix() + "embedding", mininterval=2.0, file=sys.stderr,
               disable=not progress)
    if missing:
        ds = ray.data.from_items([{"shard": i, "texts": [texts[j] for j in shards[i]]} for i in missing],
                                 override_num_blocks=len(missing))
        ds = ds.map_batches(
            embedder_cls, batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"model": ship_model(work / "embedder"), "batch_size": cfg.batch_size,
                                   "threads": cfg.threads or 1, "device": "cuda" if gpus else "cpu",
                                   "backend": cfg.embed_backend, "precision": precision},
            # A killed actor is restarted and its shard retried, however often: Ray Data's default for actor pools
            # (max_restarts=-1, max_task_retries=-1 in 2.60; passing them is deprecated). The tests kill one.
            num_gpus=1 if gpus else 0, num_cpus=0 if gpus else (cfg.threads or 1))
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
            for shard, vecs in zip(batch["shard"], batch["vectors"], strict=True):
                path = shard_dir / f"{int(shard):05d}.npy"
                if not path.is_file():  # a retried task's second copy of a shard is dropped, never appended
                    write_shard(path, vecs)
                    bar.update(len(shards[int(shard)]))
    bar.close()
    dim = int(__import__("numpy").load(shard_dir / "00000.npy", mmap_mode="r").shape[1]) if shards else 0
    return assemble_shards(shards, shard_dir, len(texts), dim)
