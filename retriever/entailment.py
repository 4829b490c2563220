"""Question entailment: a question retrieves the answered questions it entails, and their answer records are
fused with passage retrieval (Ben Abacha & Demner-Fushman, "A question-entailment approach to question
answering", BMC Bioinformatics 2019).

    from retriever.entailment import Entailment
    e = Entailment.load("artifacts/index", "artifacts/retriever/entailment")
    r = IndexRetriever.load("artifacts/index", entailment=e)

MedQuAD's question strings ("What are the treatments for Gout ?") are stored beside the index (`questions.jsonl`
and their vectors `questions.npy`, from the index's own embedder: index_build/questions.py, which the entailment
training job runs for its index). A query's nearest `candidates` questions by cosine are read with the query by the
entailment cross-encoder (`medcite train-retriever entailment`, train/entailment.py); those it judges entailed
(P >= `threshold`) are ordered by it, and their records are fused into the hybrid order by reciprocal rank, as the
question-type prior is. A record passage retrieval missed comes in with its first passage. Without a model the
nearest questions are fused by cosine alone (the ablation in benchmarks/entailment.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import IndexCorruptError, ModelLoadError
from core.types import Passage

QUESTIONS, QUESTION_VECTORS = "questions.jsonl", "questions.npy"


def questions_current(root: Path, fingerprint: str, embedder_sha256: str) -> bool:
    """Whether the index's question files were written for this index and embedder (the card in their first line)."""
    path = root / QUESTIONS
    if not (path.is_file() and (root / QUESTION_VECTORS).is_file()):
        return False
    with open(path) as f:
        card = json.loads(f.readline() or "{}")
    return card.get("fingerprint") == fingerprint and card.get("embedder_sha256") == embedder_sha256


def question_key(text: str) -> str:
    """Questions that read the same ("What are the treatments for Breast Cancer ?" from four MedQuAD sources, one
    in lower case) are one question: the same entailment, every answer to it a candidate."""
    return " ".join(text.casefold().replace("?", " ").split())


class QuestionIndex:
    """The answered questions of an index, one per distinct question string: its text, the records answering it
    and its unit vector."""

    def __init__(self, questions: list[str], records: list[list[str]], vectors: np.ndarray):
        self.questions, self.records, self.vectors = questions, records, vectors

    @classmethod
    def load(cls, root: str | Path, fingerprint: str, embedder_sha256: str) -> QuestionIndex:
        root = Path(root)
        if not questions_current(root, fingerprint, embedder_sha256):
            raise IndexCorruptError(f"{root} has no question list for this index (never written, or the index was "
                                    f"rebuilt since): run `python -m index_build.questions {root}`")
        lines = (root / QUESTIONS).read_text().splitlines()[1:]
        rows = [json.loads(x) for x in lines if x.strip()]
        vectors = np.load(root / QUESTION_VECTORS)
        if len(vectors) != len(rows):
            raise IndexCorruptError(f"{root}: {len(vectors)} question vectors for {len(rows)} questions; run "
                                    f"`python -m index_build.questions {root}`")
        return cls.grouped(rows, vectors)

    @classmethod
    def grouped(cls, rows: list[dict], vectors: np.ndarray) -> QuestionIndex:
        """One entry per distinct question (question_key), the first row's text and vector."""
        at: dict[str, int] = {}
        questions: list[str] = []
        records: list[list[str]] = []
        keep: list[int] = []
        for n, row in enumerate(rows):
            key = question_key(row["question"])
            if key not in at:
                at[key] = len(questions)
                questions.append(row["question"])
                records.append([])
                keep.append(n)
            records[at[key]].append(row["record_id"])
        return cls(questions, records, np.ascontiguousarray(vectors[keep], dtype=np.float32))

    def nearest(self, vector: np.ndarray, n: int) -> list[tuple[int, float]]:
        sims = self.vectors @ vector
        top = np.argpartition(-sims, min(n, len(sims) - 1))[:n] if len(sims) > n else np.arange(len(sims))
        return sorted(((int(i), float(sims[i])) for i in top), key=lambda t: (-t[1], t[0]))


class Entailment:
    """The entailment stage of hybrid search (IndexRetriever(entailment=...))."""

    def __init__(self, questions: QuestionIndex, model=None, candidates: int = 10, threshold: float = 0.9,
                 rrf_k: int = 60):
        self.questions, self.model = questions, model
        self.candidates, self.threshold, self.rrf_k = candidates, threshold, rrf_k

    @classmethod
    def load(cls, index_root: str | Path, model: str = "", candidates: int = 10, threshold: float = 0.9,
             threads: int = 0) -> Entailment:
        from retriever import index_dir as fmt

        manifest = fmt.check_index_dir(Path(index_root))
        questions = QuestionIndex.load(index_root, manifest["fingerprint"], manifest["embedder"]["sha256"])
        cross = None
        if model:
            if not (Path(model) / "config.json").is_file():
                raise ModelLoadError(f"entailment model {model} is not a model directory (train one with "
                                     "`medcite train-retriever entailment`, or set rerank.entailment: off)")
            import torch
            from sentence_transformers import CrossEncoder

            if threads:
                torch.set_num_threads(threads)
            try:
                cross = CrossEncoder(model, device="cpu", local_files_only=True)
            except (OSError, ValueError) as e:
                raise ModelLoadError(f"entailment model {model} could not be loaded: {str(e).splitlines()[0]}"
                                     ) from None
        return cls(questions, cross, candidates, threshold)

    def entailed(self, query: str, vector: np.ndarray) -> list[tuple[str, float, list[str]]]:
        """(answered question, score, its records), best first: the nearest distinct questions the model judges
        entailed, by its probability, or without a model the nearest by cosine."""
        q = self.questions
        near = q.nearest(vector, self.candidates)
        if self.model is None:
            return [(q.questions[i], s, q.records[i]) for i, s in near]
        probs = self.model.predict([(query, q.questions[i]) for i, _ in near], batch_size=32, show_progress_bar=False,
                                   activation_fn=_sigmoid())
        scored = [(q.questions[i], float(p), q.records[i]) for (i, _), p in zip(near, probs, strict=True)]
        return sorted((x for x in scored if x[1] >= self.threshold), key=lambda x: -x[1])

    def fuse(self, query: str, vector: np.ndarray, ranked: list[tuple[int, float]], passages: list[Passage],
             first_row: dict[str, int]) -> list[tuple[int, float]]:
        """Reciprocal-rank fusion of the hybrid order (one row per record) with the order of the entailed
        questions, every record answering one taking its rank; a record passage retrieval did not find enters with
        its first passage."""
        bonus: dict[str, float] = {}
        for r, (_, _, records) in enumerate(self.entailed(query, vector), start=1):
            for rid in records:
                if rid in first_row:
                    bonus.setdefault(rid, 1.0 / (self.rrf_k + r))
        if not bonus:
            return ranked
        fused = [(i, 1.0 / (self.rrf_k + r) + bonus.pop(passages[i].record_id, 0.0))
                 for r, (i, _) in enumerate(ranked, start=1)]
        fused += [(first_row[rid], b) for rid, b in bonus.items()]
        return sorted(fused, key=lambda t: -t[1])


def _sigmoid():
    import torch

    return torch.nn.Sigmoid()
