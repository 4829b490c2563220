"""`medcite index --engine ray` against the local engine, on Ray with 2 CPUs: the same passages, cleaning counts,
fingerprint and search results, vectors equal within fp32 tolerance; a killed embedding actor and a killed driver
neither lose nor repeat a passage."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index_build.build import build_index
from retriever.search import IndexRetriever

ROOT = Path(__file__).resolve().parents[1]
ray = pytest.importorskip("ray")
from index_build import ray_engine  # noqa: E402 (after the skip: ray is optional)


@pytest.fixture(scope="module")
def ray_cluster():
    ray_engine.start_local(num_cpus=2)
    yield
    ray.shutdown()


def _vectors(index_dir: Path) -> np.ndarray:
    import faiss

    index = faiss.read_index(str(index_dir / "dense.faiss"))
    return index.reconstruct_n(0, index.ntotal)


def _same_index(a: Path, b: Path) -> None:
    """Same passages (bytes), duplicates, BM25 files, fingerprint and counts; vectors within fp32 tolerance."""
    for name in ("passages.jsonl", "duplicates.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    for key in ("fingerprint", "counts", "cleaning", "corpora", "faiss"):
        assert ma[key] == mb[key], key
    va, vb = _vectors(a), _vectors(b)
    assert va.shape == vb.shape and np.allclose(va, vb, atol=1e-5), float(np.abs(va - vb).max())


def test_ray_engine_builds_the_local_engines_index(ray_cluster, index_config, tmp_path):
    local = build_index(index_config(out=str(tmp_path / "local")), log=lambda _: None)
    logs: list[str] = []
    dist = build_index(index_config(out=str(tmp_path / "ray"), engine="ray", ray_actors=2), log=logs.append)
    assert any("with 2 Ray actor(s) on CPU" in m for m in logs)
    assert local.manifest["counts"]["passages"] > 8  # several shards (shard_size 4)
    assert sum(local.manifest["cleaning"].values()) > 0  # the fixture data exercises the cleaning rules
    _same_index(local.out, dist.out)
    ra, rb = IndexRetriever.load(local.out, threads=1), IndexRetriever.load(dist.out, threads=1)
    for q in ("How is Ewing sarcoma treated?", "gout symptoms", "What causes fever in infants?"):
        for mode in ("dense", "bm25", "hybrid"):
            ha, hb = ra.search(q, k=5, mode=mode), rb.search(q, k=5, mode=mode)
            assert [h.passage.id for h in ha] == [h.passage.id for h in hb], (q, mode)
    # engines are how a build runs, not what it makes: the ray index is up to date for the local engine
    again = build_index(index_config(out=str(tmp_path / "ray")), log=lambda _: None)
    assert again.skipped


class _DiesOnce:
    """Wraps the real actor; kills its own process the first time it is handed shard 1 (a marker file makes
    "first" survive the restart). Pickled by value: Ray workers cannot import a test module."""

    def __init__(self, marker: str, **kw) -> None:
        from index_build.ray_engine import ShardEmbedder

        self.inner, self.marker = ShardEmbedder(**kw), marker

    def __call__(self, batch):
        if 1 in list(batch["shard"]) and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-shard, as under an OOM kill or a lost node
        return self.inner(batch)


def test_a_killed_embedding_actor_loses_and_repeats_nothing(ray_cluster, index_config, tmp_path, monkeypatch):
    import functools

    from index_build import ray_engine

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "killed"
    killer = type("DiesOnce", (_DiesOnce,), {"__init__": functools.partialmethod(_DiesOnce.__init__, str(marker))})
    original = ray_engine.embed
    monkeypatch.setattr(ray_engine, "embed", lambda *a, **kw: original(*a, **kw, embedder_cls=killer))
    dist = build_index(index_config(out=str(tmp_path / "ray"), engine="ray", ray_actors=2), log=lambda _: None)
    assert marker.exists(), "the actor was never killed"
    local = build_index(index_config(out=str(tmp_path / "local")), log=lambda _: None)
    _same_index(local.out, dist.out)


def _jsonl_corpus(tmp_path: Path, records: int) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(3)
    words = ["fever", "cough", "insulin", "aspirin", "tumor", "renal", "cardiac", "lesion", "therapy", "dose"]
    with (data / "big.jsonl").open("w") as f:
        for i in range(records):
            f.write(json.dumps({"id": f"r{i}", "title": f"Topic {i}",
                                "text": " ".join(rng.choice(words, size=int(rng.integers(5, 60))))}) + "\n")
    return data


@pytest.mark.timeout(3000)  # hang guards inside: on a busy machine Ray alone takes minutes to start
def test_a_killed_driver_resumes_from_its_finished_shards(tmp_path, tiny_embedder):
    data = _jsonl_corpus(tmp_path, 600)
    base = {"data_dir": str(data), "corpora": ["jsonl:big.jsonl"], "embedder": str(tiny_embedder),
            "chunk_tokens": 16, "chunk_overlap": 4, "batch_size": 8, "shard_size": 16, "threads": 1}
    (tmp_path / "ref.yaml").write_text(json.dumps({**base, "out": str(tmp_path / "ref")}))
    (tmp_path / "run.yaml").write_text(json.dumps({**base, "out": str(tmp_path / "idx"), "engine": "ray",
                                                   "ray_actors": 1}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "medcite", "index", "--config"]
    subprocess.run([*cmd, str(tmp_path / "ref.yaml")], check=True, env=env, cwd=ROOT, capture_output=True)
    # the driver (and the Ray instance it started) killed with SIGKILL once a few shards are written
    proc = subprocess.Popen([*cmd, str(tmp_path / "run.yaml")], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 1200  # a hang guard, not a speed test
    while time.time() < deadline and proc.poll() is None and len(list(tmp_path.glob(".idx.build-*/shards/*.npy"))) < 3:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    err = proc.stderr.read().decode()
    proc.wait()
    shards = len(list(tmp_path.glob(".idx.build-*/shards/*.npy")))
    assert shards >= 3 and not (tmp_path / "idx" / "manifest.json").exists(), err[-2000:]
    rerun = subprocess.run([*cmd, str(tmp_path / "run.yaml")], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=1200)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming:" in rerun.stderr
    _same_index(tmp_path / "ref", tmp_path / "idx")
    assert not list(tmp_path.glob(".idx.build-*"))


def test_a_ray_started_for_a_build_listens_on_loopback_only():
    """Ray's control plane has no authentication: the instance a build starts is reachable from this machine only."""
    code = ("from index_build import ray_engine; import ray, json; ray_engine.start_local(1); "
            "print(json.dumps([ray.get_runtime_context().gcs_address, ray._private.worker._global_node.node_ip_address]));"
            " ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert out.returncode == 0, out.stderr[-2000:]
    gcs, node = json.loads(out.stdout.strip().splitlines()[-1])
    assert gcs.startswith("127.0.0.1:") and node == "127.0.0.1", (gcs, node)
