"""The page's own cost, measured in the browser (Debian's chromium through playwright) against the served default
(the real index and llama.cpp generator, loaded once, uvicorn on loopback).

    .venv/bin/python benchmarks/page.py [--n 6]        # -> benchmarks/results/page.json

Per question, from the page's own clock (window.medciteStats, performance.now): Enter to the first draft text,
against the server's retrieve_ms + prefill_ms of that answer (the time before a first token can exist); and the
script time the page spends on each streamed token (parse + append). Targets: first draft text <= retrieve +
prefill + 150 ms; <= 5 ms of script per token.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.files import atomic_write_json  # noqa: E402

QUESTIONS = ["What are the treatments for gout?", "How is Ewing sarcoma diagnosed?", "Is psoriasis inherited?",
             "What causes kidney stones?", "What are the symptoms of Lyme disease?", "How to prevent shingles?"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--index", default="artifacts/index")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from pipeline.config import AnswerConfig
    from pipeline.loader import load_pipeline
    from service.app import create_app
    from tests.test_live import serve_in_thread

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        raise SystemExit("no chromium: bash scripts/browser.sh")
    served = load_pipeline(AnswerConfig(index=args.index))  # as served; the HTTP edge with its default settings
    url, srv, thread = serve_in_thread(create_app(served.retriever, served.generator, judges=served.judges))
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/")
        for i, q in enumerate((QUESTIONS * 3)[: args.n]):
            box = page.get_by_label("Question", exact=True)
            box.fill(q)
            box.press("Enter")
            page.locator(".verified").nth(i).wait_for(timeout=300_000)
            stats = page.evaluate("window.medciteStats")
            answer = page.evaluate("JSON.parse(localStorage.getItem('medcite.conversations.v1'))[0].turns.at(-1)"
                                   ".answer.timings")
            before = answer["retrieve_ms"] + answer.get("prefill_ms", 0.0)
            rows.append({"question": q, "first_draft_ms": round(stats["firstTokenMs"], 1),
                         "retrieve_plus_prefill_ms": round(before, 1),
                         "page_overhead_ms": round(stats["firstTokenMs"] - before, 1),
                         "tokens": len(stats["tokenScriptMs"]),
                         "script_ms_per_token_p50": round(statistics.median(stats["tokenScriptMs"]), 4),
                         "script_ms_per_token_max": round(max(stats["tokenScriptMs"]), 4)})
            print(rows[-1], flush=True)
        browser.close()
    srv.should_exit = True
    thread.join(10)
    result = {"command": "python benchmarks/page.py " + " ".join(sys.argv[1:]), "date": str(date.today()),
              "browser": browser_path, "model": served.generator.name, "index": served.retriever.fingerprint,
              "first_draft_over_retrieve_prefill_ms_p50": statistics.median(r["page_overhead_ms"] for r in rows),
              "script_ms_per_token_p50": statistics.median(r["script_ms_per_token_p50"] for r in rows),
              "script_ms_per_token_max": max(r["script_ms_per_token_max"] for r in rows),
              "targets": {"first_draft_over_retrieve_prefill_ms": 150, "script_ms_per_token": 5}, "rows": rows}
    atomic_write_json(ROOT / "benchmarks" / "results" / "page.json", result)
    print({k: v for k, v in result.items() if k != "rows"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
