"""Triage benchmark: both layers side by side (the reviewed rules alone, the learned layer alone, and served: rules
then the layer) on patient-worded messages, and how often triage fires on ordinary questions.

    .venv/bin/python benchmarks/triage.py          # -> benchmarks/results/triage.json

1. Held-out patient-worded messages (data/triage/heldout.jsonl: 90 emergencies of 18 kinds, 60
   near-misses, 30 ordinary questions; written before the layer was trained, never trained on or used to choose
   its threshold): recall of emergencies, false alarms, per kind; the development set (data/triage/dev.jsonl, which
   chose the threshold) beside it; and the blind probe (data/triage/probe_blind.jsonl: 75 emergencies of 17 kinds,
   75 near-misses, written by a writer who never saw the rules or the other sets; reported, never tuned on), and the
   rules' development set (data/triage/rules_dev.jsonl: 100 / 100, another blind writer's; the rules were written
   against it, so it flatters them).
2. Ordinary questions: the 200 dev questions, and 500 GenMedGPT-5k patient messages reviewed by hand
   (data/triage/genmedgpt_benchmark_review.jsonl: an index into GenMedGPT-5k.json and a triage nurse's label per
   message, from a blind review with the NHS / MedlinePlus red-flag rubric: 37 emergencies, 463 non-urgent):
   both layers' recall and false alarms on them, and what fired.
3. Latency: triage per question, rules alone vs served, interleaved (p50 over the held-out and dev questions).
4. `--stability 0,1,2`: the learned layer trained once per seed (artifacts/triage-stability/seed-N, resumable,
   ~15 min each here), each one's thresholds and its served recall / false alarms on the held-out set and the blind
   probe; the spread of the int8 threshold over the seeds; the same inputs trained twice in one process (30 steps
   each: identical weights and thresholds?); and whether the served layer (artifacts/triage, seed 0 by `make
   models`) and seed 0 here chose the same thresholds.
   -> benchmarks/results/triage-stability.json
5. `--speed`: training steps in fp32 against bf16 mixed precision (interleaved), then one whole bf16 training and
   its served quality beside the fp32 seeds' (-> benchmarks/results/triage-speed.json).
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
from evaluation.stats import wilson  # noqa: E402
from pipeline.triage import classifier, model_dir, rule_for, triage  # noqa: E402

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


def layers(rows: list[dict], model=None) -> dict:
    """Recall and false alarms of the rules alone, the learned layer alone and both (served), per kind too;
    the served layer (pipeline.triage.classifier) unless `model` is given."""
    model = model or classifier()
    out: dict = {}
    verdicts = []
    for r in rows:
        text = " ".join(r["text"].split())
        kind, score = model.predict(text) if model else ("", 0.0)
        rule = bool(rule_for(text))
        learned = bool(model) and score >= model.threshold
        verdicts.append((r, rule, learned, rule or learned, round(score, 4)))
    for name, idx in (("rules", 1), ("learned", 2), ("served", 3)):
        pos = [v[idx] for v in verdicts if v[0]["emergency"]]
        neg = [v[idx] for v in verdicts if not v[0]["emergency"]]
        out[name] = {"recall": round(sum(pos) / max(1, len(pos)), 4),
                     "recall_ci95": wilson(sum(pos), len(pos)),
                     "false_alarms": round(sum(neg) / max(1, len(neg)), 4),
                     "false_alarms_ci95": wilson(sum(neg), len(neg))}
    kinds: dict[str, list[bool]] = {}
    for v in verdicts:
        kinds.setdefault(v[0]["kind"], []).append(v[3])
    out["served_by_kind"] = {k: round(sum(x) / len(x), 3) for k, x in sorted(kinds.items())}
    out["missed"] = [{"id": v[0]["id"], "kind": v[0]["kind"], "score": v[4]} for v in verdicts
                     if v[0]["emergency"] and not v[3]]
    out["false_alarm_ids"] = [{"id": v[0]["id"], "kind": v[0]["kind"], "rule": v[1], "score": v[4]} for v in verdicts
                              if not v[0]["emergency"] and v[3]]
    out["n"] = {"emergencies": sum(1 for r in rows if r["emergency"]), "non_urgent": sum(1 for r in rows
                                                                                         if not r["emergency"])}
    return out


def latency(texts: list[str]) -> dict:
    import statistics
    import time

    times: dict[str, list[float]] = {"rules": [], "served": []}
    triage(texts[0])  # loads the layer once, as a server does at its first question
    for i, t in enumerate(texts):
        for name in (("rules", "served") if i % 2 == 0 else ("served", "rules")):
            start = time.perf_counter()
            triage(t, learned=name == "served")
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: round(statistics.median(v), 2) for name, v in times.items()}


def read_set(name: str) -> list[dict]:
    return [json.loads(x) for x in (ROOT / "data" / "triage" / f"{name}.jsonl").read_text().splitlines() if x.strip()]


def repeat_check(seed: int = 0, steps: int = 30) -> dict:
    """The same inputs trained twice in one process (the second starting from whatever the first left in the RNGs),
    `steps` steps each on the real data and model: identical weights and thresholds, or not."""
    import tempfile

    import torch
    from safetensors.torch import load_file

    from pipeline.triage import SPEC_FILE
    from train.triage import train_triage

    with tempfile.TemporaryDirectory() as tmp:
        paths = [train_triage(default_data_dir(), f"{tmp}/{n}", seed, max_steps=steps, log=lambda _: None)
                 for n in ("a", "b")]
        a, b = (load_file(str(p / "model.safetensors")) for p in paths)
        thresholds = [json.loads((p / SPEC_FILE).read_text())["thresholds"] for p in paths]
    return {"seed": seed, "steps": steps, "identical_weights": a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) for k in a), "thresholds": thresholds, "identical_thresholds": thresholds[0] == thresholds[1]}


def stability(seeds: list[int]) -> dict:
    """The layer trained once per seed: thresholds, their spread, and served quality on held-out messages."""
    from pipeline.triage import SPEC_FILE, Classifier
    from train.triage import train_triage

    sets = {name: read_set(name) for name in ("heldout", "probe_blind")}
    out: dict = {"command": "python benchmarks/triage.py --stability " + ",".join(map(str, seeds)),
                 "date": str(__import__("datetime").date.today()), "seeds": {}}
    out["repeat"] = repeat_check()  # first: the cheapest answer to "is it reproducible?"
    print("repeat", out["repeat"], flush=True)
    for seed in seeds:
        path = ROOT / "artifacts" / "triage-stability" / f"seed-{seed}"
        if not (path / SPEC_FILE).is_file():
            train_triage(default_data_dir(), str(path), seed)
        spec = json.loads((path / SPEC_FILE).read_text())
        model = Classifier.load(path)
        row = {"thresholds": spec["thresholds"], "served_precision": model.precision,
               "calibration": spec["card"]["calibration"], "train_seconds": spec["card"]["train_seconds"]}
        for name, rows in sets.items():
            m = layers(rows, model)
            row[name] = {k: m["served"][k] for k in ("recall", "recall_ci95", "false_alarms", "false_alarms_ci95")}
        out["seeds"][str(seed)] = row
        print(seed, json.dumps(row), flush=True)
    for precision in ("fp32", "int8"):
        t = [r["thresholds"][precision] for r in out["seeds"].values() if precision in r["thresholds"]]
        if t:
            out[f"{precision}_threshold_spread"] = {"min": min(t), "max": max(t), "range": round(max(t) - min(t), 4)}
    for name in sets:
        rec = [r[name]["recall"] for r in out["seeds"].values()]
        fa = [r[name]["false_alarms"] for r in out["seeds"].values()]
        out[f"{name}_spread"] = {"recall": [min(rec), max(rec)], "false_alarms": [min(fa), max(fa)]}
    served = ROOT / "artifacts" / "triage" / SPEC_FILE
    if served.is_file() and "0" in out["seeds"]:
        spec = json.loads(served.read_text())
        if spec.get("card", {}).get("seed") == 0:
            same = spec["thresholds"] == out["seeds"]["0"]["thresholds"]
            out["repeat_seed_0"] = {"served_thresholds": spec["thresholds"], "identical": same,
                                    "max_difference": max(abs(spec["thresholds"][k] - out["seeds"]["0"]["thresholds"][k])
                                                          for k in spec["thresholds"])}
    atomic_write_json(ROOT / "benchmarks" / "results" / "triage-stability.json", out)
    return out


def train_speed(steps: int = 40, reps: int = 2) -> dict:
    """Issue 37's training budget: the learned layer's training steps in fp32 and in bf16 mixed precision, `steps`
    each on the real data and model, interleaved (fp32 bf16 / bf16 fp32 ...); then one whole bf16 training (seed 0,
    artifacts/triage-stability/seed-0-bf16, resumable) and its served quality on the held-out set and the blind
    probe, beside the fp32 seeds' spread (--stability). -> benchmarks/results/triage-speed.json"""
    import tempfile

    from pipeline.triage import SPEC_FILE, Classifier
    from train.precision import native_bf16
    from train.triage import train_triage

    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for rep in range(reps):
        for precision in ("fp32", "bf16") if rep % 2 == 0 else ("bf16", "fp32"):
            with tempfile.TemporaryDirectory() as tmp:
                done = train_triage(default_data_dir(), f"{tmp}/m", 0, max_steps=steps, log=lambda _: None,
                                    precision=precision)
                loop = json.loads((done / SPEC_FILE).read_text())["card"]["train_loop_seconds"]
                rates[precision].append(steps / loop)  # the Trainer's own clock: the steps, not data or calibration
        print(rep, {k: round(v[-1], 3) for k, v in rates.items()}, flush=True)
    out: dict = {"command": "python benchmarks/triage.py --speed", "date": str(__import__("datetime").date.today()),
                 "native_bf16": native_bf16(), "steps": steps, "reps": reps,
                 "steps_per_s": {k: [round(x, 3) for x in v] for k, v in rates.items()},
                 "bf16_over_fp32": round(sorted(b / f for b, f in zip(rates["bf16"], rates["fp32"], strict=True))
                                         [reps // 2], 3),
                 "note": "steps/s by the Trainer's train_runtime: the training loop alone"}
    path = ROOT / "artifacts" / "triage-stability" / "seed-0-bf16"
    if not (path / SPEC_FILE).is_file():
        train_triage(default_data_dir(), str(path), 0, precision="bf16")
    spec = json.loads((path / SPEC_FILE).read_text())
    model = Classifier.load(path)
    row = {"thresholds": spec["thresholds"], "train_seconds": spec["card"]["train_seconds"],
           "train_precision": spec["card"].get("train_precision")}
    for name in ("heldout", "probe_blind"):
        m = layers(read_set(name), model)
        row[name] = {k: m["served"][k] for k in ("recall", "recall_ci95", "false_alarms", "false_alarms_ci95")}
    out["bf16_seed_0"] = row
    fp32 = ROOT / "benchmarks" / "results" / "triage-stability.json"
    if fp32.is_file():
        st = json.loads(fp32.read_text())
        out["fp32_seeds"] = {seed: {"train_seconds": r["train_seconds"], "heldout": r["heldout"],
                                    "probe_blind": r["probe_blind"]} for seed, r in st["seeds"].items()}
        out["inside_fp32_spread"] = {
            name: {k: st[f"{name}_spread"][k][0] <= row[name][k] <= st[f"{name}_spread"][k][1]
                   for k in ("recall", "false_alarms")} for name in ("heldout", "probe_blind")}
    atomic_write_json(ROOT / "benchmarks" / "results" / "triage-speed.json", out)
    return out


def main() -> None:
    if "--speed" in sys.argv:
        print(json.dumps(train_speed(), indent=1))
        return
    if "--stability" in sys.argv:
        seeds = sys.argv[sys.argv.index("--stability") + 1] if len(sys.argv) > sys.argv.index("--stability") + 1 \
            else "0,1,2"
        out = stability([int(x) for x in seeds.split(",")])
        print({k: v for k, v in out.items() if k != "seeds"})
        return
    data = Path(default_data_dir())
    dev = [json.loads(x)["question"] for x in (data / "splits" / "medquad_dev.jsonl").read_text().splitlines()]
    chats = [r["input"] for r in json.loads((data / "chatdoctor" / "GenMedGPT-5k.json").read_text())]
    review = [json.loads(x) for x in (ROOT / "data" / "triage" / "genmedgpt_benchmark_review.jsonl").read_text()
              .splitlines() if x.strip()]
    reviewed = [{"id": str(r["index"]), "text": chats[r["index"]], "emergency": r["label"] == "emergency",
                 "kind": "reviewed_" + r["label"]} for r in review]
    sets = {name: read_set(name) for name in ("heldout", "dev", "probe_blind", "rules_dev")}
    result = {"command": "python benchmarks/triage.py", "date": str(__import__("datetime").date.today()),
              "layer": model_dir() or None, "threshold": classifier().threshold if classifier() else None,
              "precision": classifier().precision if classifier() else None,
              "heldout": layers(sets["heldout"]), "dev_set": layers(sets["dev"]),
              "probe_blind": layers(sets["probe_blind"]), "rules_dev": layers(sets["rules_dev"]),
              "genmedgpt_reviewed": layers(reviewed),
              "dev": report("dev", dev), "genmedgpt_sample": report("genmedgpt", [r["text"] for r in reviewed]),
              "latency_p50_ms": latency([r["text"] for r in sets["heldout"]] + dev)}
    atomic_write_json(ROOT / "benchmarks" / "results" / "triage.json", result)
    for name in ("heldout", "probe_blind", "rules_dev", "dev_set", "genmedgpt_reviewed"):
        print(name, {k: result[name][k] for k in ("rules", "learned", "served")})
    for k in ("dev", "genmedgpt_sample"):
        v = result[k]
        print(k, v["n"], "fired", v["fired"], v["rate"], v["by_rule"], "quiet with alarm words",
              v["not_fired_with_alarm_words"])
    print("latency p50 ms", result["latency_p50_ms"])


if __name__ == "__main__":
    main()
