"""Answer records and people's feedback on them, in SQLite (the standard `sqlite3` module).

    store = FeedbackStore("artifacts/feedback.db", log_text=False)
    store.record(answer)                                   # every answer the API gives, by its id
    store.add(answer.id, "down", comment="wrong drug", sentence=2)
    store.export("feedback.jsonl")                         # or: medcite feedback export --out feedback.jsonl

Durability: WAL journal and synchronous=FULL, one transaction per write, and a write is acknowledged (HTTP 200)
only after its commit returns: a kill -9 of the server loses no acknowledged row (tests/test_conversation.py kills a
serving process mid-burst).

Privacy: the database, its key and its exports are readable by their owner only (0600). Question and answer text,
and a person's free-text comment, are stored only with `log_text` (the operator's setting that also logs them);
otherwise keyed hashes (HMAC-SHA256 with a secret made at first start and kept beside the database, so a short
question cannot be recovered by hashing guesses) and the answer's sources, enough to find the passages a complaint
is about. Rows older than `retention_days` are deleted (at start, then at most hourly).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from core.errors import InvalidRequestError
from core.types import Answer

SCHEMA_VERSION = 2
"""2: keyed hashes (question_hmac, answer_hmac); a version 1 database is migrated, its unkeyed hashes dropped."""
MAX_COMMENT_CHARS = 2000
RATINGS = ("up", "down")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    question_hmac TEXT NOT NULL,
    answer_hmac TEXT NOT NULL,
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


EXPIRE_EVERY_S = 3600.0


def _owner_only(path: Path) -> None:
    """Create `path` (if missing) readable and writable by its owner alone, and keep it so. SQLite gives its WAL
    and shared-memory files the database file's permissions."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


def read_key(path: Path) -> bytes:
    """The store's secret, made at first start (32 random bytes, hex, 0600); a key file that is not one is an
    error, never silently replaced (the hashes made with it would stop matching)."""
    if not path.exists():
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
    text = path.read_text().strip()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise InvalidRequestError(f"{path} is not a feedback key (64 hex characters); restore it from a backup, or "
                                  "move the database and the key aside to start a new one")
    os.chmod(path, 0o600)
    return bytes.fromhex(text)


class FeedbackStore:
    def __init__(self, path: str | Path, log_text: bool = False, retention_days: float = 90):
        self.path, self.log_text, self.retention_days = Path(path), log_text, retention_days
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(self.path)
        self._key = read_key(self.path.with_name(self.path.name + ".key"))
        self._expired_at = 0.0
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
            elif found[0] == 1:  # unkeyed SHA-256 of short questions can be reversed by guessing: dropped
                self._db.executescript("""
                    BEGIN;
                    ALTER TABLE answers RENAME COLUMN question_sha256 TO question_hmac;
                    ALTER TABLE answers RENAME COLUMN answer_sha256 TO answer_hmac;
                    UPDATE answers SET question_hmac = '', answer_hmac = '';
                    UPDATE schema_version SET version = 2;
                    COMMIT;""")
            elif found[0] != SCHEMA_VERSION:
                raise InvalidRequestError(f"{self.path} has feedback schema version {found[0]}; this medcite "
                                          f"reads version {SCHEMA_VERSION}")
        self.expire()

    def digest(self, text: str) -> str:
        """The keyed hash a row keeps of a text: equal texts match, a guess cannot be checked without the key."""
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def expire(self, now: float | None = None) -> int:
        """Delete answers and feedback older than retention_days (0: keep everything); returns rows deleted."""
        now = time.time() if now is None else now
        self._expired_at = now
        if not self.retention_days:
            return 0
        cutoff = now - self.retention_days * 86400
        with self._lock:
            self._db.execute("BEGIN")
            gone = self._db.execute("DELETE FROM feedback WHERE created < ? OR answer_id IN "
                                    "(SELECT id FROM answers WHERE created < ?)", (cutoff, cutoff)).rowcount
            gone += self._db.execute("DELETE FROM answers WHERE created < ?", (cutoff,)).rowcount
            self._db.execute("COMMIT")
        return gone

    def record(self, a: Answer) -> None:
        """Keep what feedback on this answer needs: its sources always, its text only with log_text."""
        sources = [{"marker": c.marker, "passage_id": c.hit.passage.id, "record_id": c.hit.passage.record_id,
                    "title": c.hit.passage.title} for c in a.citations]
        if time.time() - self._expired_at > EXPIRE_EVERY_S:
            self.expire()
        row = (a.id, time.time(), self.digest(a.question), self.digest(a.text),
               a.question if self.log_text else None, a.text if self.log_text else None,
               (a.retrieval_query or a.question) if self.log_text else None, a.answer_mode, json.dumps(sources),
               a.model, a.index, a.judge)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO answers VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)

    def add(self, answer_id: str, rating: str, comment: str | None = None, sentence: int | None = None) -> int:
        """Store one piece of feedback; returns its row id once committed. Unknown answer or bad fields: 400. The
        comment is free text about someone's health: kept only with log_text."""
        if rating not in RATINGS:
            raise InvalidRequestError(f"rating must be one of {', '.join(RATINGS)}, got {rating!r}")
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise InvalidRequestError(f"comment is longer than {MAX_COMMENT_CHARS} characters")
        with self._lock:
            if self._db.execute("SELECT 1 FROM answers WHERE id = ?", (answer_id,)).fetchone() is None:
                raise InvalidRequestError(f"no answer with id {answer_id!r} on this server")
            cur = self._db.execute("INSERT INTO feedback (answer_id, created, rating, comment, sentence) "
                                   "VALUES (?,?,?,?,?)", (answer_id, time.time(), rating, comment if self.log_text else None, sentence))
            return int(cur.lastrowid or 0)

    def rows(self) -> Iterator[dict]:
        """Every feedback row joined with its answer record, oldest first."""
        cols = ("feedback_id", "answer_id", "created", "rating", "comment", "sentence", "question_hmac",
                "answer_hmac", "question", "answer", "retrieval_query", "answer_mode", "sources", "model",
                "index_fingerprint", "judge")
        with self._lock:
            found = self._db.execute(
                "SELECT f.id, f.answer_id, f.created, f.rating, f.comment, f.sentence, a.question_hmac, "
                "a.answer_hmac, a.question, a.answer, a.retrieval_query, a.answer_mode, a.sources, a.model, "
                "a.index_fingerprint, a.judge FROM feedback f JOIN answers a ON a.id = f.answer_id "
                "ORDER BY f.id").fetchall()
        for values in found:
            row = dict(zip(cols, values, strict=True))
            row["sources"] = json.loads(row["sources"])
            yield {k: v for k, v in row.items() if v is not None}

    def export(self, out: str | Path) -> int:
        """Write every feedback row as JSONL (atomically, readable by its owner only); returns how many."""
        from core.files import atomic_write_jsonl

        rows = list(self.rows())
        atomic_write_jsonl(out, rows)
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
