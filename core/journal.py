"""Append-only JSONL journals: how the long jobs (fine-tuning, evaluation) record progress so a kill loses
nothing and a rerun resumes.

    append(path, {"step": 15, "quality": 0.45})   # one line, flushed and fsynced before returning
    rows = read(path)                             # every complete line; a line cut by a kill is skipped
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def append(path: Path, row: dict) -> None:
    with open(path, "a+b") as f:
        _drop_torn_tail(f)
        f.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _drop_torn_tail(f) -> None:
    """A kill mid-write leaves a last line without its newline; the next row would be glued onto it and lost
    with it. Cut the torn line (it never finished, so nothing that was recorded is lost)."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    start = max(0, size - (1 << 20))
    f.seek(start)
    tail = f.read()
    cut = tail.rfind(b"\n")
    f.truncate(start + cut + 1 if cut >= 0 else start)
    f.seek(0, os.SEEK_END)


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed run may be cut
            continue
    return rows
