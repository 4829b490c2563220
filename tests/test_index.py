"""Index round trip with a tiny embedder built in code: build, manifest, rerun, search modes, resume after kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigError, IndexCorruptError, IndexNotFoundError, InvalidRequestError, MedciteError
from index_build.build import build_index
from retriever.search import IndexRetriever

ROOT = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _stable(manifest: dict) -> dict:
    m = dict(manifest)
    for k in ("built_at", "build_seconds", "config"):
        m.pop(k)
    return m


def test_build_manifest_and_noop_rerun(index_config):
    cfg = index_config()
    logs: list[str] = []
    res = build_index(cfg, log=logs.append)
    assert not res.skipped
    out = Path(cfg.out)
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["records"] == 8 and m["counts"]["records_read"] == 9  # one exact duplicate dropped
    assert m["cleaning"] == {"key_points": 1, "restated_question": 1, "whitespace": 2, "duplicate_answers": 1}
    assert m["corpora"][0]["failed"] == ["2_GARD_QA/0000005.xml"] and m["corpora"][0]["failed_count"] == 1
    assert m["embedder"]["dim"] == 32 and len(m["embedder"]["sha256"]) == 64
    assert m["config"]["chunk_tokens"] == 32 and "torch" in m["versions"]
    passages = [json.loads(line) for line in (out / "passages.jsonl").open()]
    assert len(passages) == m["counts"]["passages"] == m["faiss"]["ntotal"]
    assert {p["record_id"] for p in passages} >= {"1:0000001_1:1", "wikidoc:2", "x1"}
    # the MedQuAD question strings are never indexed: they are the held-out evaluation questions
    assert not any("What is (are) Ewing Sarcoma" in p["text"] for p in passages)
    assert json.loads((out / "duplicates.json").read_text()) == {"2:0000004:2": "1:0000001_1:2"}
    assert not list(out.parent.glob(".index.build-*"))  # the work dir was renamed into place

    before = (out / "manifest.json").read_bytes()
    logs.clear()
    assert build_index(cfg, log=logs.append).skipped
    assert any("nothing to do" in line for line in logs)
    assert (out / "manifest.json").read_bytes() == before

    # a changed setting rebuilds and replaces the index atomically
    res2 = build_index(index_config(chunk_tokens=24, chunk_overlap=4), log=logs.append)
    assert not res2.skipped and res2.manifest["fingerprint"] != m["fingerprint"]
    assert json.loads((out / "manifest.json").read_text())["config"]["chunk_tokens"] == 24


def test_search_modes_filters_and_errors(index_config):
    cfg = index_config()
    build_index(cfg, log=lambda _: None)
    r = IndexRetriever.load(cfg.out)
    for mode in ("dense", "bm25", "hybrid"):
        hits = r.search("ewing sarcoma chemotherapy femur", k=3, mode=mode)
        assert 1 <= len(hits) <= 3 and [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    # BM25 (and so hybrid) puts the passage sharing the rare words first; the tiny embedder is random
    assert r.search("insulin pump catheter", k=1, mode="bm25")[0].passage.record_id == "x1"
    assert r.search("insulin pump catheter", k=1, mode="hybrid")[0].passage.record_id == "x1"
    # a passage's own embedding is its nearest neighbour in dense mode
    p = r.passages[0]
    assert r.search(f"{p.title}\n{p.text}", k=1, mode="dense")[0].passage.id == p.id
    hits = r.search("syndrome", k=5, mode="hybrid", source="wikidoc")
    assert hits and all(h.passage.source == "wikidoc" for h in hits)
    assert all(h.passage.source == "devices" for h in r.search("insulin", k=5, mode="dense", source="devices"))
    assert r.search("zzzqqq", k=3, mode="bm25") == []  # nothing in the vocabulary: no BM25 opinion, no error
    assert r.resolve_record("2:0000004:2") == "1:0000001_1:2"
    for bad in (dict(query=" "), dict(query="x", k=0), dict(query="x", k=101), dict(query="x", mode="sparse"),
                dict(query="x", source="nope")):
        with pytest.raises(InvalidRequestError):
            r.search(**bad)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_indexes(index_config, tmp_path, kind):
    cfg = index_config(faiss_index=kind, out=str(tmp_path / kind), ivf_nlist=4, pq_m=4, pq_nbits=4)
    m = build_index(cfg, log=lambda _: None).manifest
    assert m["faiss"]["type"] == kind
    r = IndexRetriever.load(cfg.out)
    hits = r.search("aspirin dosing", k=3, mode="dense")
    assert len(hits) == 3
    assert all(h.passage.source == "wikidoc" for h in r.search("aspirin", k=2, mode="dense", source="wikidoc"))


def test_a_factory_index_is_trained_once_filled_by_shards_and_memory_mapped(index_config, tmp_path):
    import faiss

    from index_build.build import fingerprint
    from index_build.writers import build_factory, ivf_lists

    cfg = index_config(faiss_index="factory", faiss_factory="IVF{nlist},SQ8", faiss_search="nprobe=4",
                       out=str(tmp_path / "factory"), shard_size=4)
    m = build_index(cfg, log=lambda _: None).manifest
    assert m["faiss"]["type"] == "factory"
    r = IndexRetriever.load(cfg.out)
    assert len(r.search("aspirin dosing", k=3, mode="dense")) == 3
    assert all(h.passage.source == "wikidoc" for h in r.search("aspirin", k=2, mode="dense", source="wikidoc"))
    flat = IndexRetriever.load(build_index(index_config(out=str(tmp_path / "flat")), log=lambda _: None).out)
    assert faiss.extract_index_ivf(r.dense).nprobe == 4  # the search parameters travel in the index
    assert m["fingerprint"] != flat.fingerprint
    assert fingerprint(index_config(faiss_factory="other"), [], "e") == fingerprint(index_config(), [], "e")
    assert ivf_lists(1_000_000) == 4096 and ivf_lists(100) == 2
    vecs = flat.dense.reconstruct_n(0, flat.dense.ntotal)
    with pytest.raises(ConfigError, match="faiss_factory"):
        build_factory(vecs, "NotAnIndex12")


def test_a_refined_factory_index_ranks_like_flat_and_maps_its_floats(index_config, tmp_path):
    import faiss

    # codes so coarse (4 sub-quantizers of 4 bits: 2 bytes a vector) that the order is mostly wrong; the refine
    # store re-ranks enough candidates (all of this tiny corpus) to give exactly the flat index's top k
    cfg = index_config(faiss_index="factory", faiss_factory="IVF{nlist},PQ4x4", faiss_search="nprobe=2",
                       faiss_refine=50, out=str(tmp_path / "refined"))
    m = build_index(cfg, log=lambda _: None).manifest
    assert m["faiss"]["refine"] == 50 and "dense-refine.faiss" in m["files"]
    r = IndexRetriever.load(cfg.out)
    assert isinstance(r.dense, faiss.IndexRefine) and r.dense.k_factor == 50
    flat = IndexRetriever.load(build_index(index_config(out=str(tmp_path / "flat")), log=lambda _: None).out)
    for q in ("aspirin dosing", "insulin pump", "gout treatment"):
        got, want = r._dense(q, 3, None), flat._dense(q, 3, None)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)  # exact scores, not codes'
    assert m["fingerprint"] != build_index(index_config(faiss_index="factory", faiss_factory="IVF{nlist},PQ4x4",
                                                        faiss_search="nprobe=2", out=str(tmp_path / "plain")),
                                           log=lambda _: None).manifest["fingerprint"]
    with pytest.raises(ConfigError, match="faiss_index: factory"):
        index_config(faiss_refine=4)


def test_load_errors_name_the_fix(index_config, tmp_path):
    with pytest.raises(IndexNotFoundError, match="medcite index"):
        IndexRetriever.load(tmp_path / "missing")
    cfg = index_config()
    build_index(cfg, log=lambda _: None)
    out = Path(cfg.out)
    (out / "dense.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexCorruptError, match="manifest says"):
        IndexRetriever.load(out)
    (out / "manifest.json").unlink()
    with pytest.raises(IndexCorruptError, match="no manifest.json"):
        IndexRetriever.load(out)
    # the rerun repairs it
    build_index(cfg, log=lambda _: None)
    assert IndexRetriever.load(out).search("ewing", k=1)
    # an embedder that is not the one the index was built with (same size, other bytes) is refused
    tok = out / "embedder" / "tokenizer.json"
    tok.write_bytes(tok.read_bytes().replace(b"[UNK]", b"[UNX]"))
    with pytest.raises(IndexCorruptError, match="does not match its manifest checksum"):
        IndexRetriever.load(out)
    # refusing to clobber a directory that is not an index
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(MedciteError, match="refusing to replace"):
        build_index(index_config(out=str(tmp_path / "mine")), log=lambda _: None)


def _write_kill_config(path: Path, data: Path, embedder: Path, out: Path) -> None:
    path.write_text(json.dumps({"data_dir": str(data), "corpora": ["jsonl:big.jsonl"], "out": str(out),
                                "embedder": str(embedder), "chunk_tokens": 16, "chunk_overlap": 4,
                                "batch_size": 8, "shard_size": 32, "threads": 1}))


def _kill_setup(tmp_path: Path, embedder: Path, records: int, seed: int):
    """A random JSONL corpus plus a reference and a to-be-killed config; returns (env, ref_cfg, cfg, cmd)."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(seed)
    words = ["fever", "cough", "insulin", "aspirin", "tumor", "renal", "cardiac", "lesion", "therapy", "dose", "infant", "sarcoma"]
    with (data / "big.jsonl").open("w") as f:
        for i in range(records):
            f.write(json.dumps({"id": f"r{i}", "title": f"Topic {i}",
                                "text": " ".join(rng.choice(words, size=int(rng.integers(5, 60))))}) + "\n")
    ref_cfg, cfg = tmp_path / "ref.yaml", tmp_path / "run.yaml"
    _write_kill_config(ref_cfg, data, embedder, tmp_path / "ref")
    _write_kill_config(cfg, data, embedder, tmp_path / "idx")
    return ({**os.environ, "HF_HUB_OFFLINE": "1"}, ref_cfg, cfg, [sys.executable, "-m", "medcite", "index", "--config"])


@pytest.mark.parametrize("kill_after_shards", [0, 3, 20])
def test_sigkill_and_rerun_gives_the_same_index(tmp_path, tiny_embedder, kill_after_shards):
    env, ref_cfg, cfg, cmd = _kill_setup(tmp_path, tiny_embedder, records=250, seed=0)
    subprocess.run([*cmd, str(ref_cfg)], check=True, env=env, cwd=ROOT, capture_output=True)

    proc = subprocess.Popen([*cmd, str(cfg)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        shards = list(tmp_path.glob(".idx.build-*/shards/*.npy"))
        if len(shards) >= kill_after_shards and (kill_after_shards or list(tmp_path.glob(".idx.build-*"))):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "idx" / "manifest.json").exists(), "the build finished before it could be killed"

    rerun = subprocess.run([*cmd, str(cfg)], env=env, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    if kill_after_shards:
        assert "resuming" in rerun.stderr
    assert _files(tmp_path / "idx") == _files(tmp_path / "ref")
    m_ref = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    m_run = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert _stable(m_run) == _stable(m_ref)


def test_five_random_sigkills_then_rerun_equals_an_uninterrupted_build(tmp_path, tiny_embedder):
    """index_build killed with SIGKILL at five random moments (during imports, mid-shard, mid-write), then rerun:
    the final index has the same passages and vectors, byte for byte, as a build that was never interrupted."""
    import random

    env, ref_cfg, cfg, cmd = _kill_setup(tmp_path, tiny_embedder, records=1500, seed=1)
    t = time.time()
    subprocess.run([*cmd, str(ref_cfg)], check=True, env=env, cwd=ROOT, capture_output=True)
    full_s = time.time() - t
    pick = random.Random(7)
    killed, scale = 0, 1.0
    for _ in range(15):  # five kills; a run that finished first (the machine got faster) is started over sooner
        proc = subprocess.Popen([*cmd, str(cfg)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(pick.uniform(0.2, 1.0) * full_s * scale)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        if (tmp_path / "idx" / "manifest.json").exists():
            shutil.rmtree(tmp_path / "idx")
            scale /= 2
        if killed == 5:
            break
    assert killed >= 3, f"only {killed} of the runs were still going when killed"
    rerun = subprocess.run([*cmd, str(cfg)], env=env, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert _files(tmp_path / "idx") == _files(tmp_path / "ref")
    assert not list(tmp_path.glob(".idx.build-*"))  # no half-built leftovers




def test_a_corrupted_passages_file_of_the_right_size_names_the_file_the_line_and_the_fix(index_config, capsys):
    """The size check passes (same bytes count), so the load itself must say what is wrong, not raise
    JSONDecodeError with a traceback."""
    from medcite.cli import main

    cfg = index_config()
    build_index(cfg, log=lambda _: None)
    out = Path(cfg.out)
    lines = (out / "passages.jsonl").read_bytes().split(b"\n")
    lines[2] = b"{" + lines[2][1:].replace(b'"', b"'", 1)  # same length, no longer JSON
    (out / "passages.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(IndexCorruptError, match=r"passages.jsonl line 3 is corrupted .*`medcite index --out"):
        IndexRetriever.load(out)
    capsys.readouterr()  # the build's progress bars
    assert main(["search", "ewing", "--index", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 3" in err and "Traceback" not in err
    (out / "passages.jsonl").write_bytes(b"\n".join(lines[:2] + [b'{"id": 1}'.ljust(len(lines[2]))] + lines[3:]))
    with pytest.raises(IndexCorruptError, match="line 3 is corrupted \\(not a passage record\\)"):
        IndexRetriever.load(out)
