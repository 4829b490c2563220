"""What /metrics and feedback cost a request: POST /v1/retrieve against the real index on two servers side by
side, one with metrics and the feedback store on (the default) and one with both off, requests interleaved
A/B/B/A so drifting machine load falls on both.

    .venv/bin/python benchmarks/overhead.py [--n 400]        # -> benchmarks/results/overhead.json

Target (issue "conversations"): <= 2 ms added at p50. Both servers share one loaded retriever; the generator is a
stand-in (retrieval never calls it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.files import atomic_write_json  # noqa: E402

QUERIES = ["How is gout treated?", "What are the symptoms of Ewing sarcoma?", "Is psoriasis inherited?",
           "what causes kidney stones", "How to prevent Lyme disease?", "my dad has atrial fibrillation"]


def serve(app) -> tuple[str, object]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", srv


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--index", default="artifacts/index")
    args = ap.parse_args()

    import httpx

    from core.feedback import FeedbackStore
    from pipeline.config import AnswerConfig
    from retriever.loader import load_retriever
    from service.app import create_app
    from tests.fakes import FakeGenerator

    answer = AnswerConfig(index=args.index)
    retriever = load_retriever(answer.index, answer.rerank)
    with tempfile.TemporaryDirectory() as tmp:
        on_app = create_app(retriever, FakeGenerator(), feedback=FeedbackStore(Path(tmp) / "f.db"))
        # the same server's settings with metrics off (and no feedback store): what the two cost on /v1/retrieve
        off_cfg = dataclasses.replace(on_app.state.components.cfg, metrics="off")
        on_url, on = serve(on_app)
        off_url, off = serve(create_app(retriever, FakeGenerator(), off_cfg))
        times: dict[str, list[float]] = {"on": [], "off": []}
        with httpx.Client(timeout=30) as c:
            for url in (on_url, off_url):  # warm both
                c.post(f"{url}/v1/retrieve", json={"query": QUERIES[0]})
            for i in range(args.n):
                order = (("on", on_url), ("off", off_url)) if i % 2 == 0 else (("off", off_url), ("on", on_url))
                for arm, url in order:
                    t = time.perf_counter()
                    r = c.post(f"{url}/v1/retrieve", json={"query": QUERIES[i % len(QUERIES)]})
                    times[arm].append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200, r.text
            scraped = c.get(f"{on_url}/metrics").text
        on.should_exit = off.should_exit = True
    p50 = {arm: round(statistics.median(v), 3) for arm, v in times.items()}
    result = {"command": "python benchmarks/overhead.py " + " ".join(sys.argv[1:]), "date": str(date.today()),
              "index": retriever.fingerprint, "n": args.n, "retrieve_p50_ms": p50,
              "added_p50_ms": round(p50["on"] - p50["off"], 3), "ratio_on_off": round(p50["on"] / p50["off"], 4),
              "target_added_ms": 2.0,
              "metrics_counted": f'medcite_requests_total{{route="/v1/retrieve",status="200"}} {args.n + 1}.0'
              in scraped}
    atomic_write_json(ROOT / "benchmarks" / "results" / "overhead.json", result)
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
