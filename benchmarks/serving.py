"""Serving benchmark: overheads of the API around the model, decode efficiency, and answer quality of the two
repetition-penalty scopes. Ratios of side-by-side measurements only (this machine's timings swing 3-8x).

    .venv/bin/python benchmarks/serving.py [--index artifacts/index] [--quality-questions 30] [--parts e2e,decode]

1. E2E overhead: (E2E p50 - generate p50) / generate p50 over /v1/answer on a `medcite serve` subprocess
   (target <= 0.05).
2. Server efficiency: /v1/retrieve requests/s under a bounded loopback load / in-process retrieve() capacity,
   A/B/A/B (target >= 0.8).
3. Decode efficiency: decode tokens/s / (memory bandwidth measured now / weight bytes) (target >= 0.5):
   a batch-1 decode step must stream every weight once, so bandwidth / weight bytes is its ceiling.
4. Quality of penalty_scope=generated vs all on dev questions: token F1 against the gold answer, share of
   answers ending at end-of-turn, repeated 4-gram rate, share citing a passage, and share with a runaway list.

Writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import DecodingConfig, GeneratorConfig, default_data_dir  # noqa: E402
from core.corpus import clean_records, read_corpus  # noqa: E402
from core.quality import repeated_ngram_rate, runaway_list, token_f1  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: str, port: int) -> subprocess.Popen:
    # The server logs a JSON line per request to stderr: into a file, never a pipe nobody drains (a full pipe
    # buffer blocks the server after a few hundred requests).
    log = tempfile.NamedTemporaryFile("w+", prefix="medcite-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "medcite", "serve", "--index", index, "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {Path(log.name).read_text()[-500:]}")
        time.sleep(0.5)
    raise SystemExit("server did not become ready")


def e2e_overhead(base: str, questions: list[str], max_new_tokens: int) -> dict:
    import httpx

    e2e, gen = [], []
    with httpx.Client(timeout=300) as c:
        for q in questions:
            t = time.perf_counter()
            r = c.post(f"{base}/v1/answer", json={"question": q, "max_new_tokens": max_new_tokens})
            e2e.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            gen.append(r.json()["timings"]["generate_ms"])
    e, g = statistics.median(e2e), statistics.median(gen)
    return {"requests": len(questions), "max_new_tokens": max_new_tokens, "e2e_p50_ms": round(e, 1),
            "generate_p50_ms": round(g, 1), "overhead": round((e - g) / g, 4)}


def retrieve_efficiency(base: str, retriever, queries: list[str], concurrency: int, reps: int) -> dict:
    import httpx

    def in_process() -> float:
        t = time.perf_counter()
        for q in queries:
            retriever.search(q, k=3, mode="hybrid")
        return len(queries) / (time.perf_counter() - t)

    def over_http() -> float:
        todo = list(queries)
        lock = threading.Lock()

        def worker() -> None:
            with httpx.Client(timeout=60) as c:
                while True:
                    with lock:
                        if not todo:
                            return
                        q = todo.pop()
                    c.post(f"{base}/v1/retrieve", json={"query": q, "k": 3}).raise_for_status()

        t = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return len(queries) / (time.perf_counter() - t)

    a, b = [], []
    for _ in range(reps):
        a.append(in_process())
        b.append(over_http())
    return {"queries": len(queries), "concurrency": concurrency, "in_process_rps": [round(x, 1) for x in a],
            "http_rps": [round(x, 1) for x in b], "ratio": round(statistics.median(b) / statistics.median(a), 3)}


def decode_efficiency(gen) -> dict:
    import numpy as np
    import torch

    weight_bytes = sum(p.numel() * p.element_size() for p in gen.model.parameters())
    # Memory bandwidth two ways, both read + write of 256 MiB (far beyond cache): numpy's single-threaded
    # memcpy and torch's copy_ on the decode's own thread count. The larger one is the ceiling used.
    src = np.ones(64 * 1024 * 1024, dtype=np.float32)
    dst = np.empty_like(src)
    tsrc, tdst = torch.from_numpy(src), torch.empty(src.shape[0])
    bw_np, bw_torch = [], []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        bw_np.append(2 * src.nbytes / (time.perf_counter() - t))
        t = time.perf_counter()
        tdst.copy_(tsrc)
        bw_torch.append(2 * src.nbytes / (time.perf_counter() - t))
    bw = max(max(bw_np), max(bw_torch))
    ids, mask = gen._inputs([{"role": "user", "content": "Describe the heart in detail."}])

    def timed(n: int) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            gen.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, pad_token_id=gen.pad_id)
        return time.perf_counter() - t

    timed(4)  # warm-up
    n = 96
    per_token = statistics.median([(timed(n + 1) - timed(1)) / n for _ in range(3)])
    tps = 1 / per_token
    ceiling = bw / weight_bytes
    return {"threads": torch.get_num_threads(), "weight_bytes": weight_bytes,
            "bandwidth_numpy_GBps": round(max(bw_np) / 1e9, 2), "bandwidth_torch_GBps": round(max(bw_torch) / 1e9, 2),
            "decode_tokens_per_s": round(tps, 1), "bandwidth_bound_tokens_per_s": round(ceiling, 1),
            "ratio": round(tps / ceiling, 3)}


def quality(retriever, gen, dev: list[dict], gold_text: dict[str, str], k: int) -> dict:
    from service.pipeline import answer

    out = {}
    for scope in ("generated", "all"):
        rows = []
        for d in dev:
            a = answer(d["question"], retriever, gen, k=k, penalty_scope=scope)
            rows.append({"f1": token_f1(a.text, gold_text[d["gold_medquad_id"]]),
                         "eot": a.stop_reason == "end_of_turn", "rep4": repeated_ngram_rate(a.text),
                         "cites": bool(a.citations), "runaway": runaway_list(a.text),
                         "tokens": a.usage["completion_tokens"]})
        out[scope] = {"questions": len(rows),
                      "token_f1": round(statistics.mean(r["f1"] for r in rows), 4),
                      "end_of_turn_share": round(statistics.mean(r["eot"] for r in rows), 3),
                      "repeated_4gram_rate": round(statistics.mean(r["rep4"] for r in rows), 4),
                      "citing_share": round(statistics.mean(r["cites"] for r in rows), 3),
                      "runaway_list_share": round(statistics.mean(r["runaway"] for r in rows), 3),
                      "mean_completion_tokens": round(statistics.mean(r["tokens"] for r in rows), 1)}
        print(scope, json.dumps(out[scope]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--quality-questions", type=int, default=30)
    ap.add_argument("--e2e-requests", type=int, default=8)
    ap.add_argument("--parts", default="e2e,retrieve,decode,quality",
                    help="comma-separated subset to run; results of parts not run are kept from the last file")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    from generator.hf import HFGenerator
    from retriever.search import IndexRetriever

    dev = [json.loads(line) for line in (Path(args.data_dir) / "splits" / "medquad_dev.jsonl").read_text().splitlines()]
    retriever = IndexRetriever.load(args.index)
    gen = HFGenerator.load(GeneratorConfig(), DecodingConfig())  # the serve.yaml defaults
    out_file = RESULTS / "serving.json"
    res: dict = json.loads(out_file.read_text()) if out_file.is_file() else {}
    res.update({"index": retriever.fingerprint[:12], "model": gen.name})

    if parts & {"e2e", "retrieve"}:
        port = free_port()
        server = start_server(args.index, port)
        base = f"http://127.0.0.1:{port}"
        try:
            if "e2e" in parts:
                res["e2e"] = e2e_overhead(base, [d["question"] for d in dev[:args.e2e_requests]], max_new_tokens=64)
                print("e2e", json.dumps(res["e2e"]), flush=True)
            if "retrieve" in parts:
                res["retrieve"] = retrieve_efficiency(base, retriever, [d["question"] for d in dev[:100]], 4, 2)
                print("retrieve", json.dumps(res["retrieve"]), flush=True)
        finally:
            server.terminate()
            server.wait(30)
    if "decode" in parts:
        res["decode"] = decode_efficiency(gen)
        print("decode", json.dumps(res["decode"]), flush=True)
    if "quality" in parts:
        records, _ = clean_records(read_corpus("medquad:medquad", args.data_dir).records)
        gold_text = {r.id: r.text for r in records}
        for r in records:
            for dup in r.duplicate_ids:
                gold_text[dup] = r.text
        res["penalty_scope_quality"] = quality(retriever, gen, dev[:args.quality_questions], gold_text, k=3)
    res["targets_met"] = {"e2e overhead <= 0.05": res.get("e2e", {}).get("overhead", 1) <= 0.05,
                          "server efficiency >= 0.8": res.get("retrieve", {}).get("ratio", 0) >= 0.8,
                          "decode efficiency >= 0.5": res.get("decode", {}).get("ratio", 0) >= 0.5}
    print(json.dumps(res["targets_met"], indent=1))
    RESULTS.mkdir(exist_ok=True)
    out_file.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
