"""What kind of answer a passage sentence gives (cause, symptoms, treatment, diagnosis, overview, ...): a
logistic regression over verification's sentence vectors (`pipeline.verify.stage.verify_embed`), fitted by
`medcite index` on the index's own passages (train/sentence_kinds.py) and stored beside them. Extractive answers
add `verify.type_prior` times the probability of the kind the question asks for to the cosine that orders the
quotes, so "What causes gonorrhea?" quotes "The bacteria that cause gonorrhea ..." before "Gonorrhea is more common
in large cities"."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.files import atomic_write_bytes

FILENAME = "sentence_kinds.npz"
CARD = "sentence_kinds.json"


@dataclass(frozen=True)
class SentenceKinds:
    classes: tuple[str, ...]
    coef: np.ndarray
    intercept: np.ndarray

    def prob(self, vectors: np.ndarray, wanted: Iterable[str]) -> np.ndarray:
        """P(the sentence gives one of the `wanted` kinds), one per row of `vectors` (0 where none is known)."""
        cols = [i for i, c in enumerate(self.classes) if c in set(wanted)]
        if not cols or len(vectors) == 0:
            return np.zeros(len(vectors))
        logits = vectors @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return p[:, cols].sum(axis=1)

    def save(self, path: Path) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, classes=np.array(self.classes), coef=self.coef, intercept=self.intercept)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> SentenceKinds:
        with np.load(path, allow_pickle=False) as z:
            return cls(tuple(str(c) for c in z["classes"]), z["coef"].astype(np.float32),
                       z["intercept"].astype(np.float32))


def load_kinds(index_dir: Path) -> SentenceKinds | None:
    """The index's classifier, or None when `medcite index` has not fitted one (quotes then go by cosine alone)."""
    path = Path(index_dir) / FILENAME
    return SentenceKinds.load(path) if path.is_file() else None
