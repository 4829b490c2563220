"""Answer records and people's feedback on them, in SQLite (the standard `sqlite3` module).

    store = FeedbackStore("artifacts/feedback.db", log_text=False)
    store.record(answer)                                   # every answer the API gives, by its id
    store.add(answer.id, "down", comment="wrong drug", sentence=2)
    store.export("feedback.jsonl")                         # or: medcite feedback export --out feedback.jsonl

Durability: WAL journal and synchronous=FULL, one transaction per write, and a write is acknowledged (HTTP 200)
only after its commit returns: a kill -9 of the server loses no acknowledged row (tests/test_feedback.py kills a
serving process mid-burst). Privacy: question and answer text are stored only with `log_text` (the operator's
setting that also logs them); otherwise their SHA-256 and the answer's sources, enough to find the passages a
complaint is about.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from core.errors import InvalidRequestError
from core.types import Answer

SCHEMA_VERSION = 1
MAX_COMMENT_CHARS = 2000
RATINGS = ("up", "down")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    question_sha256 TEXT NOT NULL,
    answer_sha256 TEXT NOT NULL,
    question TEXT,
    answer TEXT,
    retrieval_query TEXT,
    answer_mode TEXT NOT NULL,
    sources TEXT NOT NULL,
    model TEXT NOT NULL,
    index_fingerprint TEXT,
    judge TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    answer_id TEXT NOT NULL REFERENCES answers(id),
    created REAL NOT NULL,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment TEXT,
    sentence INTEGER
);
CREATE INDEX IF NOT EXISTS feedback_answer ON feedback(answer_id);
"""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FeedbackStore:
    def __init__(self, path: str | Path, log_text: bool = False):
        self.path, self.log_text = Path(path), log_text
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, shared by the worker threads, one writer at a time
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT version FROM schema_version").fetchone()
            if found is None:
                self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif found[0] != SCHEMA_VERSION:
                raise InvalidRequestError(f"{self.path} has feedback schema version {found[0]}; this medcite "
                                          f"reads version {SCHEMA_VERSION}")

    def record(self, a: Answer) -> None:
        """Keep what feedback on this answer needs: its sources always, its text only with log_text."""
        sources = [{"marker": c.marker, "passage_id": c.hit.passage.id, "record_id": c.hit.passage.record_id,
                    "title": c.hit.passage.title} for c in a.citations]
        row = (a.id, time.time(), sha256(a.question), sha256(a.text),
               a.question if self.log_text else None, a.text if self.log_text else None,
               (a.retrieval_query or a.question) if self.log_text else None, a.answer_mode, json.dumps(sources),
               a.model, a.index, a.judge)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)

    def add(self, answer_id: str, rating: str, comment: str | None = None, sentence: int | None = None) -> int:
        """Store one piece of feedback; returns its row id once committed. Unknown answer or bad fields: 400."""
        if rating not in RATINGS:
            raise InvalidRequestError(f"rating must be one of {', '.join(RATINGS)}, got {rating!r}")
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise InvalidRequestError(f"comment is longer than {MAX_COMMENT_CHARS} characters")
        with self._lock:
            if self._db.execute("SELECT 1 FROM answers WHERE id = ?", (answer_id,)).fetchone() is None:
                raise InvalidRequestError(f"no answer with id {answer_id!r} on this server")
            cur = self._db.execute("INSERT INTO feedback (answer_id, created, rating, comment, sentence) "
                                   "VALUES (?,?,?,?,?)", (answer_id, time.time(), rating, comment, sentence))
            return int(cur.lastrowid or 0)

    def rows(self) -> Iterator[dict]:
        """Every feedback row joined with its answer record, oldest first."""
        cols = ("feedback_id", "answer_id", "created", "rating", "comment", "sentence", "question_sha256",
                "answer_sha256", "question", "answer", "retrieval_query", "answer_mode", "sources", "model",
                "index_fingerprint", "judge")
        with self._lock:
            found = self._db.execute(
                "SELECT f.id, f.answer_id, f.created, f.rating, f.comment, f.sentence, a.question_sha256, "
                "a.answer_sha256, a.question, a.answer, a.retrieval_query, a.answer_mode, a.sources, a.model, "
                "a.index_fingerprint, a.judge FROM feedback f JOIN answers a ON a.id = f.answer_id "
                "ORDER BY f.id").fetchall()
        for values in found:
            row = dict(zip(cols, values, strict=True))
            row["sources"] = json.loads(row["sources"])
            yield {k: v for k, v in row.items() if v is not None}

    def export(self, out: str | Path) -> int:
        """Write every feedback row as JSONL (atomically); returns how many."""
        from core.files import atomic_write_jsonl

        rows = list(self.rows())
        atomic_write_jsonl(out, rows)
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
