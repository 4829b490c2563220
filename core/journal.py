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
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
