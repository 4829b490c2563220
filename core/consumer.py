"""The real consumer dev questions (../shared/data/consumer: MEDIQA-2019's Alexa questions and the validation
messages people sent the NLM) and their silver links to corpus records: read by the rulers (evaluation.rulers) and
by the relevance gate's calibration (train.calibrate), which must keep what people write too."""

from __future__ import annotations

import json
from pathlib import Path

CONSUMER_DIR = "consumer"
QUESTIONS = "mediqa2019_dev.questions.jsonl"
QRELS = "mediqa2019_dev.qrels.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def consumer_questions(data_dir: str) -> list[dict]:
    """All 127 consumer dev questions, linked or not ("relevant" empty where no record was linked); none when the
    data has no consumer set."""
    root = Path(data_dir) / CONSUMER_DIR
    if not (root / QUESTIONS).is_file():
        return []
    links = {r["id"]: r["relevant"] for r in read_jsonl(root / QRELS)} if (root / QRELS).is_file() else {}
    return [{"id": q["id"], "question": q["question"], "relevant": links.get(q["id"], [])}
            for q in read_jsonl(root / QUESTIONS)]
