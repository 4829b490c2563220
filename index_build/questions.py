"""The answered-question list of an index (retriever/entailment.py reads it): MedQuAD's question string for each
of its records in the index ("What are the treatments for Gout ?"), embedded with the index's own embedder.
`medcite index` writes it after the index (about 30 s for 15,800 questions here); a no-op when it is current.

    python -m index_build.questions artifacts/index     # again, for an index built before it existed
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.files import atomic_write_bytes, atomic_write_text
from retriever.entailment import QUESTION_VECTORS, QUESTIONS, questions_current


def index_questions(index_dir: str | Path, data_dir: str | Path, log: Callable[[str], None] = print) -> int:
    """Write the question list of the index at `index_dir` from the MedQuAD corpora it was built from (read again
    from `data_dir`, cleaned as the build cleans); returns how many questions it holds."""
    import io

    from core.corpus import clean_records, read_corpus
    from retriever.search import IndexRetriever

    root = Path(index_dir)
    retriever = IndexRetriever.load(root)
    sha = retriever.manifest["embedder"]["sha256"]
    if questions_current(root, retriever.fingerprint, sha):
        return len((root / QUESTIONS).read_text().splitlines()) - 1
    started = time.time()
    rows: dict[str, str] = {}
    for spec in (c["spec"] for c in retriever.manifest.get("corpora", [])):
        # MedQuAD's questions only: WikiDoc's are its records' titles, searchable already (listed too, measured
        # with the cosine arm: consumer dev recall@1 0.653 -> 0.510, recall@5 0.898 -> 0.918)
        if not spec.startswith("medquad"):
            continue
        records, _ = clean_records(read_corpus(spec, data_dir).records)
        for r in records:
            rid = retriever.resolve_record(r.id)
            if r.question and retriever.passages_of(rid):
                rows.setdefault(rid, r.question)  # a merged duplicate keeps the kept record's question
    ids = sorted(rows)
    vectors = retriever.embed([rows[i] for i in ids]) if ids else np.zeros((0, retriever.dense.d), "float32")
    buf = io.BytesIO()
    np.save(buf, vectors.astype("float32"))
    atomic_write_bytes(root / QUESTION_VECTORS, buf.getvalue())
    card = {"fingerprint": retriever.fingerprint, "embedder_sha256": sha, "questions": len(ids)}
    # the card last, in the list's first line: a list whose card matches was written whole, after its vectors
    atomic_write_text(root / QUESTIONS, "\n".join(json.dumps(x, ensure_ascii=False) for x in
                                                  [card, *({"record_id": i, "question": rows[i]} for i in ids)])
                      + "\n")
    log(f"question list for {root}: {len(ids)} answered questions ({time.time() - started:.0f} s)")
    return len(ids)


if __name__ == "__main__":
    import sys

    from core.config import default_data_dir
    from core.errors import MedciteError

    if len(sys.argv) < 2:
        sys.exit("usage: python -m index_build.questions INDEX_DIR [DATA_DIR]")
    try:
        index_questions(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else default_data_dir())
    except MedciteError as e:
        sys.exit(f"error: {e}")
