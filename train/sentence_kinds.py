"""Fit the sentence-kind classifier of an index (pipeline/verify/kinds.py): each passage sentence labelled with
its record's MedQuAD section ("Gout: treatment") or the one question type its title asks ("What causes SAD?"), a
balanced draw embedded as verification embeds, and a logistic regression (scikit-learn). `medcite index` runs it
after calibration; about a minute on 2 cores.

    python -m train.sentence_kinds artifacts/index     # again, for an index built before it existed
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from core.files import atomic_write_json
from core.quality import split_sentences
from pipeline.verify.kinds import CARD, FILENAME, SentenceKinds

PER_KIND = 400
"""Sentences drawn per kind (14 kinds: about 5,600 sentences)."""


def passage_kind(title: str) -> str | None:
    """The kind of answer a passage's record gives: its MedQuAD section, or the one question type its title asks."""
    from retriever.search import QUESTION_TYPES, question_types

    subject, sep, section = title.rpartition(": ")
    if sep and section.lower() in QUESTION_TYPES:
        return section.lower()
    kinds = question_types(title) if title.rstrip().endswith("?") else set()
    return next(iter(kinds)) if len(kinds) == 1 else None


def fit(passages: Iterable[tuple[str, str]], embed: Callable[[list[str]], np.ndarray], seed: int = 0,
        per_kind: int = PER_KIND) -> tuple[SentenceKinds, dict]:
    """Fit on (title, text) passages: up to `per_kind` sentences of each kind, drawn with `seed`; 20% held out for
    the accuracy the card reports, then refitted on all."""
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(seed)
    by: dict[str, list[str]] = {}
    for title, text in passages:
        kind = passage_kind(title)
        if kind:
            by.setdefault(kind, []).extend(s for s in split_sentences(text) if len(s.split()) >= 5)
    texts, labels = [], []
    for kind in sorted(by):
        pool = sorted(set(by[kind]))
        rng.shuffle(pool)
        texts += pool[:per_kind]
        labels += [kind] * len(pool[:per_kind])
    if len(set(labels)) < 2:
        raise ValueError("sentence kinds: fewer than two kinds of passages to fit on")
    vectors = np.asarray(embed(texts), dtype=np.float32)
    y = np.array(labels)
    order = list(range(len(texts)))
    rng.shuffle(order)
    cut = int(0.8 * len(order))
    clf = LogisticRegression(C=4.0, max_iter=2000)
    clf.fit(vectors[order[:cut]], y[order[:cut]])
    held_out = float(clf.score(vectors[order[cut:]], y[order[cut:]]))
    clf.fit(vectors, y)
    model = SentenceKinds(tuple(str(c) for c in clf.classes_), clf.coef_.astype(np.float32),
                          clf.intercept_.astype(np.float32))
    card = {"sentences": len(texts), "kinds": {k: labels.count(k) for k in sorted(set(labels))},
            "held_out_accuracy": round(held_out, 4), "seed": seed}
    return model, card


def fit_index(index_dir: str | Path, log: Callable[[str], None] = print, force: bool = False) -> dict:
    """Fit and store the classifier of the index at `index_dir` (nothing to do when its card names this index's
    embedder and verification scale already)."""
    import json

    from pipeline.verify.stage import verify_embed
    from retriever.loader import load_retriever

    root = Path(index_dir)
    retriever = load_retriever(str(root.resolve()))
    embed = verify_embed(retriever, retriever.embed)
    scale = "index" if embed is not None and embed == retriever.embed else "reference"
    key = {"embedder_sha256": retriever.manifest["embedder"]["sha256"], "scale": scale, "per_kind": PER_KIND}
    card_path = root / CARD
    if not force and (root / FILENAME).is_file() and card_path.is_file():
        card = json.loads(card_path.read_text())
        if all(card.get(k) == v for k, v in key.items()):
            return card
    started = time.time()
    try:
        model, card = fit(((p.title, p.text) for p in retriever.passages), embed)
    except ValueError as e:  # a corpus without sections (no MedQuAD, no question titles): quotes by cosine alone
        log(f"no sentence kinds for {root}: {e}")
        return {}
    model.save(root / FILENAME)
    card = key | card | {"seconds": round(time.time() - started, 1)}
    atomic_write_json(card_path, card)
    log(f"sentence kinds for {root}: {len(model.classes)} kinds from {card['sentences']} sentences, held-out "
        f"accuracy {card['held_out_accuracy']} ({card['seconds']} s)")
    return card


if __name__ == "__main__":
    import sys

    from core.errors import MedciteError

    if len(sys.argv) < 2:
        sys.exit("usage: python -m train.sentence_kinds INDEX_DIR [--force]")
    try:
        fit_index(sys.argv[1], force="--force" in sys.argv)
    except MedciteError as e:
        sys.exit(f"sentence_kinds: {e}")
