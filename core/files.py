"""Atomic files and directories: what every job uses to write, so a kill at any moment leaves the old
version or the new one, never a torn file or a missing directory.

    atomic_write_bytes(path, data)          # also atomic_write_text / atomic_write_json / atomic_write_jsonl
    with atomic_path(path) as tmp:          # for libraries that write to a path themselves (faiss, numpy)
        faiss.write_index(index, str(tmp))
    with staging_dir(final) as tmp:         # build a directory, then publish it in one step
        (tmp / "a.json").write_text("...")
    publish_dir(work, final)                # or publish an existing work directory

Files: a temporary sibling, fsync, rename over the target, fsync the parent. Directories: every file is
fsynced, then the new directory is swapped with the old one by one `renameat2(RENAME_EXCHANGE)` (Linux), so
the target path always names a complete directory; the old one is removed afterwards. Where the exchange is
not supported, two renames are used and `recover_dir` puts a kept-aside old directory back if a kill came
between them. Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`; whatever is written there replaces `path` (fsynced) when the block ends
    without an error, and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict], sort_keys: bool = False) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=sort_keys) + "\n" for r in rows))


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(dirpath))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(a))


def _aside(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


def recover_dir(final: str | os.PathLike) -> None:
    """Finish what a killed writer left: restore a kept-aside directory if the target is missing, else remove
    the leftover; remove staging directories of writers that are no longer running."""
    final = Path(final)
    old = _aside(final)
    if old.exists():
        if not final.exists():
            os.replace(old, final)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):  # staging dirs of writers that were killed
        if not _alive(tmp.name.rpartition("-")[2]):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def publish_dir(work: str | os.PathLike, final: str | os.PathLike) -> None:
    """Make the finished directory `work` appear at `final` in one step; an existing `final` is replaced.
    `work` must be on the same file system (a sibling)."""
    work, final = Path(work), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    _fsync_tree(work)
    if final.exists():
        if _exchange(work, final):  # final now holds the new tree, work the old one
            _fsync_dir(final.parent)
            shutil.rmtree(work, ignore_errors=True)
            return
        old = _aside(final)
        os.replace(final, old)  # a kill here leaves `old`: recover_dir puts it back
        os.replace(work, final)
        _fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(work, final)
    _fsync_dir(final.parent)


@contextlib.contextmanager
def staging_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A fresh sibling directory to build `final` in; published with `publish_dir` when the block ends
    without an error, removed when it raises."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_run_identity(path: str | os.PathLike, identity: dict[str, Any], what: str) -> None:
    """A long job's run directory belongs to one set of settings. The first run writes `identity` to `path`;
    a rerun with other settings is refused, naming what differs, instead of mixing results."""
    from core.errors import ConfigError

    path = Path(path)
    if path.is_file():
        saved = json.loads(path.read_text())
        diff = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
        if diff:
            raise ConfigError(f"{path.parent} holds a {what} with other settings ({', '.join(diff[:6])}); pick "
                              "another run_name or delete that directory")
        return
    atomic_write_json(path, identity)


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` under folder that the Trainer finished writing (its trainer_state.json is written
    last): a kill during a save leaves a newer, partial one, which transformers' get_last_checkpoint would pick and
    then fail to resume from (found when a test's SIGKILL landed mid-save)."""
    root = Path(folder)
    if not root.is_dir():
        return None
    done = [p for p in root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
            and (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None
