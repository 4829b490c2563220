"""A cross-encoder reranking stage: rescores the top-N hybrid results for a query, jointly reading query and passage.

    from retriever.rerank import Reranker
    r = IndexRetriever.load("artifacts/index-tuned", reranker=Reranker.load("artifacts/retriever/reranker"))

Trained by `medcite train-retriever reranker` (train/). On with the tuned index that `make retriever`
builds, or by config (`rerank:` in serve.yaml; retriever.loader.resolve_reranker); fused with the hybrid order by
default. Its latency and gain are in benchmarks/results/retrieval.json. Only hybrid results are reranked: dense
and BM25 stay the plain rankers they are named after.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import ModelLoadError
from core.types import Passage
from retriever.index_dir import embed_text


class Reranker:
    """A sentence-transformers CrossEncoder over (query, passage title + text)."""

    def __init__(self, model, top_n: int = 10, fuse: bool = True, rrf_k: int = 60):
        self.model, self.top_n, self.fuse, self.rrf_k = model, top_n, fuse, rrf_k

    @classmethod
    def load(cls, path: str, top_n: int = 10, threads: int = 0, fuse: bool = True) -> Reranker:
        """Defaults as RerankConfig's."""
        if not (Path(path) / "config.json").is_file():
            raise ModelLoadError(f"reranker {path} is not a model directory (train one with "
                                 "`medcite train-retriever reranker`, or set rerank.model: off)")
        import torch
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the per-load "Loading weights" bar, as for the embedder
        if threads:
            torch.set_num_threads(threads)
        try:
            return cls(CrossEncoder(path, device="cpu", local_files_only=True), top_n, fuse)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"reranker {path} could not be loaded: {str(e).splitlines()[0]}") from None

    def scores(self, query: str, texts: list[str]) -> list[float]:
        return [float(s) for s in self.model.predict([(query, t) for t in texts], batch_size=32,
                                                     show_progress_bar=False)]

    def rerank(self, query: str, ranked: list[tuple[int, float]], passages: list[Passage]
               ) -> list[tuple[int, float]]:
        """The top_n of `ranked` reordered by the cross-encoder's score (which becomes their score), or with
        `fuse` by reciprocal rank fusion of its order and the hybrid order (1/(k + rank) summed, as hybrid fuses
        dense and BM25); the rest keep their order below them."""
        head, tail = ranked[:self.top_n], ranked[self.top_n:]
        if not head:
            return ranked
        scores = self.scores(query, [embed_text(passages[i]) for i, _ in head])
        if self.fuse:
            by_ce = sorted(range(len(head)), key=lambda n: (-scores[n], n))
            ce_rank = {n: r for r, n in enumerate(by_ce, 1)}
            scores = [1 / (self.rrf_k + ce_rank[n]) + 1 / (self.rrf_k + n + 1) for n in range(len(head))]
        order = sorted(range(len(head)), key=lambda n: (-scores[n], n))  # ties keep the hybrid order
        floor = min(scores)
        return [(head[n][0], scores[n]) for n in order] + [(i, floor - 1.0 - n) for n, (i, _) in enumerate(tail)]
