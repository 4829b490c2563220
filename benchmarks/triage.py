"""Triage report: how often the red-flag rules fire on the 200 dev questions and on the GenMedGPT-5k patient
messages, with what fired and a sample of what did not (for review).

    .venv/bin/python benchmarks/triage.py          # -> benchmarks/results/triage.json
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import default_data_dir  # noqa: E402
from core.files import atomic_write_json  # noqa: E402
from service.triage import triage  # noqa: E402

# words a reviewer looks for in the messages that did not fire
ALARM_WORDS = ("chest", "breath", "faint", "blood", "overdose", "suicid", "seizure", "unconscious", "swallow",
               "fever", "numb", "stroke", "swelling")


def report(name: str, texts: list[str]) -> dict:
    fired = [(t, triage(t)) for t in texts]
    hits = [(t, r.rule) for t, r in fired if r]
    quiet_alarming = [t for t, r in fired if not r and any(w in t.lower() for w in ALARM_WORDS)]
    rng = random.Random(0)
    return {"n": len(texts), "fired": len(hits), "rate": round(len(hits) / max(1, len(texts)), 4),
            "by_rule": dict(Counter(rule for _, rule in hits)),
            "fired_sample": [{"rule": r, "text": t[:240]} for t, r in rng.sample(hits, min(15, len(hits)))],
            "not_fired_with_alarm_words": len(quiet_alarming),
            "not_fired_sample": [t[:240] for t in rng.sample(quiet_alarming, min(15, len(quiet_alarming)))]}


def main() -> None:
    data = Path(default_data_dir())
    dev = [json.loads(x)["question"] for x in (data / "splits" / "medquad_dev.jsonl").read_text().splitlines()]
    chats = [r["input"] for r in json.loads((data / "chatdoctor" / "GenMedGPT-5k.json").read_text())]
    result = {"dev": report("dev", dev), "genmedgpt": report("genmedgpt", chats)}
    atomic_write_json(ROOT / "benchmarks" / "results" / "triage.json", result)
    for k, v in result.items():
        print(k, v["n"], "fired", v["fired"], v["rate"], v["by_rule"], "quiet with alarm words", v["not_fired_with_alarm_words"])


if __name__ == "__main__":
    main()
