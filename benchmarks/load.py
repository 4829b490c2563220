"""Bounded loopback load on a real `medcite serve` (full index, SmolLM2): errors, backpressure, latency, memory.

    .venv/bin/python benchmarks/load.py [--retrieve 2000 --retrieve-concurrency 16]
                                        [--answer 100 --answer-concurrency 8 --burst-concurrency 16]
    # -> benchmarks/results/load.json

Phases: (1) /v1/retrieve x N at concurrency 16; (2) /v1/answer x M at concurrency 8 (= the queue: nothing should be
refused); (3) a burst of /v1/answer at concurrency 16 (> queue_size + 1: the surplus must get 503 + Retry-After,
never a 5xx of another kind); (4) admission: 100 /v1/answer requests at once, one connection each: how many were
admitted (max_in_flight, default queue_size + 1 = 9), p50/p99 of the admitted, the server's threads before, just
after and 15 s after the burst (back to baseline).

    .venv/bin/python benchmarks/load.py --phases admission        # -> benchmarks/results/load-admission.json The server's RSS is sampled throughout; "memory flat" = RSS at the end of the run /
RSS after warm-up, with RSS after each phase (a second answer phase shows whether growth continues or has
settled). Latencies are p50/p99 per phase. Nothing here is an absolute threshold: the result file records
what happened, and the run fails only on unintended errors.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from serving import free_port, start_server  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else float("nan")


def phase(base: str, route: str, bodies: list[dict], concurrency: int) -> dict:
    import httpx

    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    bad: list[str] = []
    retry_after_missing = 0
    queue = list(enumerate(bodies))

    def worker() -> None:
        nonlocal retry_after_missing
        with httpx.Client(timeout=600) as c:
            while True:
                with lock:
                    if not queue:
                        return
                    _, body = queue.pop()
                t = time.perf_counter()
                try:
                    r = c.post(f"{base}{route}", json=body)
                    status = r.status_code
                except httpx.HTTPError as e:
                    with lock:
                        statuses[0] = statuses.get(0, 0) + 1
                        bad.append(repr(e)[:200])
                    continue
                ms = (time.perf_counter() - t) * 1000
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append(ms)
                    elif status == 503 and "retry-after" not in r.headers:
                        retry_after_missing += 1
                    elif status not in (200, 503):
                        bad.append(f"{status}: {r.text[:200]}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return {"route": route, "requests": len(bodies), "concurrency": concurrency, "statuses": statuses,
            "unintended_errors": bad[:10], "unintended_error_count": len(bad),
            "503_without_retry_after": retry_after_missing, "p50_ms": _pct(latencies, 0.5),
            "p99_ms": _pct(latencies, 0.99), "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
            "throughput_rps": round(len(latencies) / wall, 2), "wall_s": round(wall, 1)}


def main() -> None:
    import psutil

    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default=str(ROOT / "artifacts" / "index"))
    ap.add_argument("--retrieve", type=int, default=2000)
    ap.add_argument("--retrieve-concurrency", type=int, default=16)
    ap.add_argument("--answer", type=int, default=100)
    ap.add_argument("--answer-concurrency", type=int, default=8)
    ap.add_argument("--burst", type=int, default=40)
    ap.add_argument("--burst-concurrency", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--admission", type=int, default=100, help="requests sent at once in the admission phase")
    ap.add_argument("--phases", default="retrieve,answer,answer_again,burst,admission")
    args = ap.parse_args()
    phases = args.phases.split(",")
    dev = [json.loads(x)["question"] for x in (ROOT.parent / "shared" / "data" / "splits" / "medquad_dev.jsonl")
           .read_text().splitlines() if x.strip()]
    port = free_port()
    proc = start_server(args.index, port)
    server = psutil.Process(proc.pid)
    base = f"http://127.0.0.1:{port}"
    rss: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss.append((time.time(), server.memory_info().rss / 2**20))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        phase(base, "/v1/retrieve", [{"query": q, "k": 5} for q in dev[:50]], 4)  # warm-up
        phase(base, "/v1/answer", [{"question": q, "max_new_tokens": 8} for q in dev[:4]], 2)
        rss_warm = server.memory_info().rss / 2**20
        sampler.start()
        results = {}
        for name, route, bodies, conc in (
                ("retrieve", "/v1/retrieve", [{"query": dev[i % len(dev)], "k": 5} for i in range(args.retrieve)],
                 args.retrieve_concurrency),
                ("answer", "/v1/answer", [{"question": dev[i % len(dev)], "max_new_tokens": args.max_new_tokens}
                                          for i in range(args.answer)], args.answer_concurrency),
                ("answer_again", "/v1/answer", [{"question": dev[(i + 100) % len(dev)],
                                                 "max_new_tokens": args.max_new_tokens} for i in range(args.answer // 2)],
                 args.answer_concurrency),
                ("burst", "/v1/answer", [{"question": dev[i % len(dev)], "max_new_tokens": args.max_new_tokens}
                                         for i in range(args.burst)], args.burst_concurrency),
                ("admission", "/v1/answer", [{"question": dev[i % len(dev)], "max_new_tokens": args.max_new_tokens}
                                             for i in range(args.admission)], args.admission)):
            if name not in phases:
                continue
            threads_before = server.num_threads()
            results[name] = phase(base, route, bodies, conc)
            results[name]["rss_at_end_mb"] = round(server.memory_info().rss / 2**20, 1)
            if name == "admission":  # every request at once: the places admit some, refuse the rest at once
                after = server.num_threads()
                time.sleep(15)
                idle = server.num_threads()
                # anyio retires a worker thread idle for 10 s when the next piece of work arrives
                phase(base, "/v1/retrieve", [{"query": dev[0], "k": 5}], 1)
                results[name].update(admitted=results[name]["statuses"].get(200, 0),
                                     refused_503=results[name]["statuses"].get(503, 0),
                                     server_threads={"before": threads_before, "just_after": after,
                                                     "after_15s_idle": idle,
                                                     "after_15s_and_one_request": server.num_threads()})
        for name, r in results.items():
            print(name, json.dumps(r), flush=True)
        rss_end = server.memory_info().rss / 2**20
    finally:
        stop.set()
        proc.terminate()
        proc.wait(30)
    peak = max(m for _, m in rss) if rss else rss_end
    out = {
        "what": "loopback load on `medcite serve` (full index, SmolLM2-135M, 2 CPU cores); answers capped at "
                f"{args.max_new_tokens} new tokens; queue_size 8",
        **results,
        "memory": {"rss_after_warmup_mb": round(rss_warm, 1), "rss_end_mb": round(rss_end, 1),
                   "rss_peak_mb": round(peak, 1), "end_over_warm_ratio": round(rss_end / rss_warm, 3),
                   "samples": len(rss)},
        "unintended_errors_total": sum(r["unintended_error_count"] + r["503_without_retry_after"]
                                       for r in results.values()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "load.json" if len(phases) > 1 else f"load-{phases[0]}.json"
    out["command"] = "python benchmarks/load.py " + " ".join(sys.argv[1:])
    (RESULTS / name).write_text(json.dumps(out, indent=2))
    print(json.dumps({"memory": out["memory"], "unintended_errors_total": out["unintended_errors_total"]}, indent=2))
    if out["unintended_errors_total"]:
        raise SystemExit("unintended errors under load (see benchmarks/results/load.json)")


if __name__ == "__main__":
    main()
