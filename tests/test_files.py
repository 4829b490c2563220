"""core.files: atomic files and directories survive SIGKILL at any moment; a kept-aside directory is recovered."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.files import atomic_write_json, publish_dir, recover_dir, staging_dir

ROOT = Path(__file__).resolve().parents[1]

# A writer that rewrites one file and republishes one directory forever; each version is self-consistent
# (every file of version n says n), so a reader can tell a torn or mixed state from a whole one.
WRITER = """
import json, sys
from pathlib import Path
from core.files import atomic_write_json, staging_dir
root = Path(sys.argv[1])
n = int((root / "start").read_text())
(root / "ready").touch()  # imports done: the kill lands while it writes, however slow the machine is
while True:
    n += 1
    atomic_write_json(root / "state.json", {"n": n, "pad": "x" * 20000})
    with staging_dir(root / "published") as tmp:
        for i in range(20):
            (tmp / f"part{i}.json").write_text(json.dumps({"n": n, "pad": "y" * 5000}))
"""


def _check(root: Path) -> None:
    state = json.loads((root / "state.json").read_text())  # never torn
    assert state["pad"] == "x" * 20000
    recover_dir(root / "published")  # what a job does before it uses its output again
    parts = sorted((root / "published").iterdir())
    assert len(parts) == 20, "the published directory is incomplete"
    assert len({json.loads(p.read_text())["n"] for p in parts}) == 1, "files of two versions mixed"
    leftovers = sorted(p.name for p in root.iterdir() if p.name.startswith(".published"))
    assert not leftovers, f"a killed writer's staging or kept-aside directory leaked: {leftovers}"


def test_sigkill_never_leaves_a_torn_file_or_a_missing_directory(tmp_path):
    root = tmp_path
    atomic_write_json(root / "state.json", {"n": 0, "pad": "x" * 20000})
    with staging_dir(root / "published") as tmp:
        for i in range(20):
            (tmp / f"part{i}.json").write_text(json.dumps({"n": 0, "pad": "y" * 5000}))
    (root / "start").write_text("0")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(0)
    for run in range(8):
        (root / "ready").unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], env=env)
        deadline = time.monotonic() + 600  # a hang guard only: Python's start on a busy machine takes seconds
        while not (root / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.random() * 0.7)
        if run == 7:  # the last run waits for a write of its own, so the loop surely killed a writer mid-work
            while json.loads((root / "state.json").read_text())["n"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check(root)
    assert json.loads((root / "state.json").read_text())["n"] > 0, "the writer never got to write"


def test_publish_replaces_and_recover_restores_a_kept_aside_directory(tmp_path):
    final = tmp_path / "out"
    with staging_dir(final) as tmp:
        (tmp / "a").write_text("1")
    with staging_dir(final) as tmp:
        (tmp / "a").write_text("2")
    assert (final / "a").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # the two-rename fallback killed between its renames: the old directory is aside, the target missing
    os.replace(final, tmp_path / ".out.old")
    recover_dir(final)
    assert (final / "a").read_text() == "2"
    # a failed build leaves nothing behind and the old output untouched
    with pytest.raises(RuntimeError), staging_dir(final) as tmp:
        (tmp / "a").write_text("3")
        raise RuntimeError("build failed")
    assert (final / "a").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    work = tmp_path / "work"
    work.mkdir()
    (work / "b").write_text("4")
    publish_dir(work, final)
    assert sorted(p.name for p in final.iterdir()) == ["b"] and not work.exists()


def test_journal_row_after_a_torn_line_is_kept(tmp_path):
    from core import journal

    path = tmp_path / "progress.jsonl"
    journal.append(path, {"n": 1})
    with open(path, "ab") as f:  # a kill in the middle of writing row 2
        f.write(b'{"n": 2, "answer": "cut he')
    journal.append(path, {"n": 3})
    assert journal.read(path) == [{"n": 1}, {"n": 3}]
    assert path.read_text().count("\n") == 2
