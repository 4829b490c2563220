"""The two judges of the verification stage, trained offline on this corpus: a faithfulness judge (passage,
sentence) -> P(the passage states the sentence), and an answerhood scorer (question, sentence) -> P(the sentence
answers the question asked). Both are small sentence-transformers CrossEncoders (MiniLM-L6 from the packaged
embedder), trained with CrossEncoderTrainer and BinaryCrossEntropyLoss.

    medcite train-judges all --config configs/judges.yaml       # or `make models`; ~25 min on 2 cores
    medcite train-judges faithfulness                          # one of them

Faithfulness data (MiniCheck / AlignScore / FactCC style): a passage of a non-reserved record; positives are its
own sentences and meaning-preserving rewrites of them (train.perturb.paraphrase); negatives are the same
sentences altered in meaning (negation, numbers, direction, quantifiers, conditions, a medical term swapped,
another condition's sentence put under this one's name, a true sentence merged with another record's claim) and
true sentences of other records the passage does not hold (the same document's other sections first).
Answerhood data (MedQuAD's structure): a record's question, templated or rewritten as a patient would write it
(train.data.consumerize), against sentences of its own answer (positives) and against sentences of the
same document's other answers ("research" is not "treatment") and of other conditions' answers of the same kind.
Every sentence is shown as "title\\nsentence", as the pipeline shows it.

Reserved MedQuAD documents are never used (asserted). One document in 20 is held out as validation: the
checkpoint is chosen on it and the thresholds are calibrated on it, then written with their numbers to
`calibration.json` in the model directory (the loader refuses a directory without it). A killed run resumes from
its last checkpoint; the rows are written once and reused; another config in the same run directory is refused.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

from core.config import config_to_dict
from core.corpus import clean_records, read_corpus, read_reserved
from core.errors import DataError
from core.files import atomic_write_json, atomic_write_jsonl, check_run_identity, staging_dir
from core.quality import content_words, split_sentences
from core.types import Passage, Record
from pipeline.verify.support import aligned_window
from train import perturb
from train.config import JudgeTrainConfig
from train.data import consumerize

JUDGES = ("faithfulness", "answerhood")
NEGATIVE_FAMILIES = ("negation", "number", "direction", "quantifier", "condition", "term", "entity_swap", "merge",
                     "other_record")


def judge_text(title: str, sentence: str) -> str:
    """How a sentence is shown to the answerhood scorer (and a passage to the faithfulness judge): its source's
    title (focus and question type) first."""
    return f"{title}\n{sentence}" if title else sentence


def _held_out(document: str) -> bool:
    return int(hashlib.sha256(document.encode()).hexdigest(), 16) % 20 == 0


def _document(r: Record) -> str:
    return r.meta.get("document") or r.id


def read_records(cfg: JudgeTrainConfig, *, reserved_only: bool = False) -> list[Record]:
    """Cleaned records with text, as indexed: the non-reserved ones (training and validation), or only the
    reserved ones (the benchmarks' probe sets; never trained on)."""
    reserved = read_reserved(cfg.data_dir, cfg.reserved)
    out = []
    for spec in cfg.sources:
        records, _ = clean_records(read_corpus(spec, cfg.data_dir).records)
        out += [r for r in records if (r.meta.get("document") in reserved) == reserved_only]
    if not reserved_only and any(r.meta.get("document") in reserved for r in out):
        raise DataError("reserved MedQuAD documents in the judges' training data")
    return out


def passages(records: list[Record], size: int = 200, overlap: int = 40) -> list[Passage]:
    """The records cut as the index cuts them (the packaged embedder's tokenizer, index defaults)."""
    from transformers import AutoTokenizer

    from index_build.chunk import chunk_records
    from retriever.embedder import resolve_embedder

    tok = AutoTokenizer.from_pretrained(resolve_embedder(""))
    return chunk_records(records, tok, size, overlap)


def claim_sentences(text: str) -> list[str]:
    """Sentences that state something: whole, at least six words, not a list lead-in or a question."""
    return [s for s in split_sentences(text) if len(s.split()) >= 6 and s[:1].isupper()
            and not s.rstrip().endswith((":", "?", "...")) and not s.startswith(("-", "*"))]


def rare_terms(records: list[Record], low: int = 3, high_share: float = 0.01) -> list[str]:
    """Technical vocabulary: long words in few records (drug, gene, anatomy and disease names)."""
    from collections import Counter

    df: Counter[str] = Counter()
    for r in records:
        df.update({w for w in re.findall(r"[a-z][a-z0-9-]{6,}", r.text.lower())})
    cap = max(low + 1, int(len(records) * high_share))
    return sorted(w for w, n in df.items() if low <= n <= cap)


class _Corpus:
    """What the negative families draw on: records by document, by question type, and the term vocabulary."""

    def __init__(self, records: list[Record], rng: random.Random):
        self.records, self.rng = records, rng
        self.by_doc: dict[str, list[Record]] = {}
        self.by_qtype: dict[str, list[Record]] = {}
        for r in records:
            self.by_doc.setdefault(_document(r), []).append(r)
            self.by_qtype.setdefault(r.meta.get("qtype", ""), []).append(r)
        self.terms = rare_terms(records)
        self.sentences = {r.id: claim_sentences(r.text) for r in records}

    def other_sentence(self, r: Record, same_doc_first: bool = True) -> tuple[Record, str] | None:
        pools = []
        if same_doc_first:
            pools.append([s for s in self.by_doc.get(_document(r), []) if s.id != r.id])
        pools.append(self.by_qtype.get(r.meta.get("qtype", ""), []))
        pools.append(self.records)
        for pool in pools:
            for _ in range(6):
                if not pool:
                    break
                o = self.rng.choice(pool)
                if _document(o) == _document(r) and o.id == r.id:
                    continue
                if self.sentences.get(o.id):
                    return o, self.rng.choice(self.sentences[o.id])
        return None


def _focus(r: Record) -> str:
    return r.meta.get("focus") or r.title.split(":")[0]


def _entity_swap(r: Record, sentence: str, corpus: _Corpus) -> str | None:
    """Another condition's sentence put under this condition's name (or this one's under another's)."""
    focus = _focus(r)
    if focus and re.search(re.escape(focus), sentence, re.I):
        other = corpus.rng.choice(corpus.records)
        of = _focus(other)
        if of and of.lower() != focus.lower():
            return re.sub(re.escape(focus), of, sentence, count=1, flags=re.I)
    got = corpus.other_sentence(r, same_doc_first=False)
    if (got and focus and _focus(got[0]) and re.search(re.escape(_focus(got[0])), got[1], re.I)
            and _focus(got[0]).lower() != focus.lower()):
        return re.sub(re.escape(_focus(got[0])), focus, got[1], count=1, flags=re.I)
    return None


def _merge(r: Record, sentence: str, corpus: _Corpus) -> str | None:
    got = corpus.other_sentence(r)
    if not got:
        return None
    claim = got[1].rstrip(".")
    return f"{sentence.rstrip('.')}, and {claim[:1].lower()}{claim[1:]}."


def alter(family: str, r: Record, sentence: str, passage_text: str, corpus: _Corpus) -> str | None:
    """The sentence altered by one negative family (None where it does not apply)."""
    rng = corpus.rng
    if family in perturb.ALTERATIONS:
        return perturb.ALTERATIONS[family](sentence, rng)
    if family == "term":
        return perturb.swap_term(sentence, rng, corpus.terms, content_words(passage_text))
    if family == "entity_swap":
        return _entity_swap(r, sentence, corpus)
    if family == "merge":
        return _merge(r, sentence, corpus)
    got = corpus.other_sentence(r)
    return got[1] if got else None


def shown(p: Passage, sentence: str) -> str:
    """What the faithfulness judge reads for a sentence: the title and the passage sentences aligned with it."""
    return judge_text(p.title, aligned_window(p.text, sentence))


def faithfulness_rows(records: list[Record], chunks: list[Passage], n_passages: int, seed: int,
                      families: tuple[str, ...] = NEGATIVE_FAMILIES) -> list[dict]:
    """Rows {passage, sentence, label, family}: per passage two positives (the sentence or a rewrite) and two
    negatives from different families, drawn in turn so every family is represented."""
    rng = random.Random(seed)
    corpus = _Corpus(records, rng)
    by_id = {r.id: r for r in records}
    order = list(chunks)
    rng.shuffle(order)
    rows: list[dict] = []
    turn = 0
    used = 0
    for p in order:
        if used >= n_passages:
            break
        r = by_id[p.record_id]
        sents = claim_sentences(p.text)
        if not sents:
            continue
        used += 1
        picked = rng.sample(sents, min(2, len(sents)))
        for s in picked:
            positive = s if rng.random() < 0.3 else perturb.paraphrase(s, rng, _focus(r))
            rows.append({"passage": shown(p, positive), "sentence": positive, "label": 1.0,
                         "family": "copy" if positive == s else "paraphrase"})
        made = 0
        for k in range(len(families)):
            family = families[turn % len(families)]
            turn += 1
            # minimal pairs: the negatives alter the very sentences the positives keep, so the one changed word
            # is what tells them apart (drawn at random, the judge stayed near chance on negation and numbers)
            s = picked[(made + k) % len(picked)]
            bad = alter(family, r, s, p.text, corpus)
            if bad and bad.strip() != s.strip():
                rows.append({"passage": shown(p, bad), "sentence": bad, "label": 0.0, "family": family})
                made += 1
            if made == 2:
                break
    return rows


def answerhood_rows(records: list[Record], n_questions: int, seed: int, consumer_share: float = 0.35) -> list[dict]:
    """Rows {question, sentence, label, family}: a record's question (or its patient-style rewrite) against two of
    its own answer's sentences and against sentences of a sibling answer (same document, other question type),
    of another condition's answer of the same type, and of a sibling answer shown under the record's own title."""
    rng = random.Random(seed)
    corpus = _Corpus(records, rng)
    asked = [r for r in records if r.question and corpus.sentences.get(r.id)]
    rng.shuffle(asked)
    rows: list[dict] = []
    for r in asked[:n_questions]:
        q = r.question
        siblings = [s for s in corpus.by_doc.get(_document(r), []) if s.id != r.id and corpus.sentences.get(s.id)]
        if rng.random() < consumer_share:
            other = rng.choice(siblings).question if siblings and rng.random() < 0.3 else None
            q = consumerize(q, _focus(r), rng, other)
        own = corpus.sentences[r.id][:4]  # an answer's opening sentences answer its question most directly
        for s in rng.sample(own, min(2, len(own))):
            rows.append({"question": q, "sentence": judge_text(r.title, s), "label": 1.0, "family": "own"})
        if siblings:
            sib = rng.choice(siblings)
            rows.append({"question": q, "sentence": judge_text(sib.title, rng.choice(corpus.sentences[sib.id])),
                         "label": 0.0, "family": "other_section"})
            sib = rng.choice(siblings)
            rows.append({"question": q, "sentence": judge_text(r.title, rng.choice(corpus.sentences[sib.id])),
                         "label": 0.0, "family": "other_section_same_title"})
        got = corpus.other_sentence(r, same_doc_first=False)
        if got:
            rows.append({"question": q, "sentence": judge_text(got[0].title, got[1]), "label": 0.0,
                         "family": "other_condition"})
    return rows


# --- training ----------------------------------------------------------------------------------------------------

def _split(cfg: JudgeTrainConfig, log: Callable[[str], None]) -> tuple[list[Record], list[Record]]:
    records = read_records(cfg)
    train = [r for r in records if not _held_out(_document(r))]
    val = [r for r in records if _held_out(_document(r))]
    log(f"  {len(train)} training records, {len(val)} validation records (1 document in 20); reserved excluded")
    return train, val


def build_rows(cfg: JudgeTrainConfig, judge: str, log: Callable[[str], None]) -> tuple[list[dict], list[dict]]:
    train, val = _split(cfg, log)
    if judge == "faithfulness":
        return (faithfulness_rows(train, passages(train), cfg.faithfulness_passages, cfg.seed),
                faithfulness_rows(val, passages(val), cfg.validation_items, cfg.seed + 1))
    return (answerhood_rows(train, cfg.answerhood_questions, cfg.seed),
            answerhood_rows(val, cfg.validation_items, cfg.seed + 1))


def _pair(judge: str, row: dict) -> tuple[str, str]:
    return (row["passage"], row["sentence"]) if judge == "faithfulness" else (row["question"], row["sentence"])


def threshold_for(scores: list[float], labels: list[float], min_kept: float) -> dict:
    """The threshold with the best balanced accuracy among those that keep >= min_kept of the positives."""
    pos = sorted(s for s, y in zip(scores, labels, strict=True) if y)
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    best: dict = {}
    for t in sorted({math.floor(x * 1000) / 1000 for x in scores} | {0.0, 0.5}):  # 0 keeps every positive
        kept = sum(s >= t for s in pos) / len(pos)
        caught = sum(s < t for s in neg) / len(neg)
        if kept >= min_kept and (not best or (kept + caught) / 2 > best["balanced_accuracy"]):
            best = {"threshold": t, "positives_kept": round(kept, 4), "negatives_caught": round(caught, 4),
                    "balanced_accuracy": round((kept + caught) / 2, 4)}
    return best


def by_family(scores: list[float], rows: list[dict], threshold: float) -> dict[str, dict]:
    """Per row family: how many rows, and the share judged as their label says."""
    out: dict[str, list[bool]] = {}
    for s, row in zip(scores, rows, strict=True):
        out.setdefault(row["family"], []).append((s >= threshold) == bool(row["label"]))
    return {f: {"n": len(v), "correct": round(sum(v) / len(v), 4)} for f, v in sorted(out.items())}


def train_judge(cfg: JudgeTrainConfig, judge: str, log: Callable[[str], None] = print) -> Path:
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Args
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderClassificationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from retriever.embedder import resolve_embedder
    from train.retriever import RUN_FILE, _fit, _peak_rss_mib, _trainer_args, pooler_to_identity

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(cfg.out) / f"{judge}-run"
    work.mkdir(parents=True, exist_ok=True)
    other = "answerhood_" if judge == "faithfulness" else "faithfulness_"  # the other judge's settings do not count
    identity = {"judge": judge, **{k: v for k, v in config_to_dict(cfg).items()
                                   if k not in ("out", "threads") and not k.startswith(other)}}
    check_run_identity(work / "run.json", identity, "judge training run")
    started = time.time()
    train_path, val_path = work / "train.jsonl", work / "validation.jsonl"
    if train_path.is_file() and val_path.is_file():
        import json

        train_rows = [json.loads(x) for x in train_path.read_text().splitlines()]
        val_rows = [json.loads(x) for x in val_path.read_text().splitlines()]
    else:
        log(f"building {judge} rows from {cfg.data_dir}")
        train_rows, val_rows = build_rows(cfg, judge, log)
        atomic_write_jsonl(val_path, val_rows)
        atomic_write_jsonl(train_path, train_rows)
    pos = sum(r["label"] for r in train_rows)
    log(f"  {len(train_rows)} training rows ({pos:.0f} positive), {len(val_rows)} validation rows")
    max_length = cfg.faithfulness_max_length if judge == "faithfulness" else cfg.answerhood_max_length
    base = cfg.base or resolve_embedder("")
    model = CrossEncoder(base, num_labels=1, max_length=max_length, device="cpu", local_files_only=True)
    if pooler_to_identity(model):
        log("  the base's untrained BERT pooler starts as identity")
    data = Dataset.from_list([{"a": _pair(judge, r)[0], "b": _pair(judge, r)[1], "label": r["label"]}
                              for r in train_rows]).shuffle(seed=cfg.seed)
    evaluator = CrossEncoderClassificationEvaluator([_pair(judge, r) for r in val_rows],
                                                    [int(r["label"]) for r in val_rows], name="val",
                                                    show_progress_bar=False, write_csv=False)
    metric = "eval_val_average_precision"
    args = _trainer_args(Args, work, cfg, metric, cfg.batch_size, cfg.learning_rate, cfg.eval_steps)
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor((len(train_rows) - pos) / max(pos, 1.0)))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss, evaluator=evaluator,
                                  callbacks=[_progress(log)])
    _fit(trainer, work, log)
    scores = [float(s) for s in trainer.model.predict([_pair(judge, r) for r in val_rows], batch_size=64,
                                                      show_progress_bar=False)]
    labels = [r["label"] for r in val_rows]
    cal = threshold_for(scores, labels, cfg.min_kept)
    cal["by_family"] = by_family(scores, val_rows, cal["threshold"])
    if judge == "answerhood":
        cal["gate"] = answer_gate(scores, val_rows)
    card = {"stage": judge, "base": base, "config": config_to_dict(cfg), "rows": len(train_rows),
            "positives": pos, "validation_rows": len(val_rows),
            "dev_evals": [{"step": e["step"], metric: round(e[metric], 4)} for e in trainer.state.log_history
                          if metric in e],
            "train_seconds": round(time.time() - started, 1), "peak_rss_mib": _peak_rss_mib(),
            "best_checkpoint": trainer.state.best_model_checkpoint}
    out = Path(cfg.out) / judge
    calibration = {"judge": judge, "calibrated_on": f"validation rows of held-out training documents ({len(val_rows)})",
                   "min_kept": cfg.min_kept, **cal}
    with staging_dir(out) as tmp:  # model, card and calibration appear together or not at all
        trainer.model.save(str(tmp))
        atomic_write_json(tmp / RUN_FILE, card)
        atomic_write_json(tmp / CALIBRATION, calibration)
        calibrate_precisions(tmp, judge, val_rows, cfg.min_kept)
    log(f"{judge} judge written to {out} ({card['train_seconds']:.0f}s); threshold {cal['threshold']}: "
        f"kept {cal['positives_kept']}, caught {cal['negatives_caught']}; see {RUN_FILE}")
    return out


CALIBRATION = "calibration.json"


def calibrate_precisions(path: Path, judge: str, val_rows: list[dict], min_kept: float,
                         precisions: tuple[str, ...] = ("int8",)) -> dict:
    """The threshold of each served precision, chosen on the same validation rows by the same rule (written to
    calibration.json under `precisions`; CrossEncoderJudge.threshold reads the one it runs at). Dynamic int8 moves
    the scores a little: on the 971 validation rows the int8 faithfulness judge kept 0.949 of the faithful
    sentences at the fp32 threshold (0.587), under the 0.95 it was chosen to keep; its own threshold, 0.562, keeps
    0.951 (session 8)."""
    import json

    from pipeline.verify.judges import CrossEncoderJudge

    calibration = json.loads((path / CALIBRATION).read_text())
    labels = [r["label"] for r in val_rows]
    for precision in precisions:
        model = CrossEncoderJudge.load(path, precision)
        scores = model.score([_pair(judge, r) for r in val_rows])
        calibration.setdefault("precisions", {})[precision] = threshold_for(scores, labels, min_kept)
    atomic_write_json(path / CALIBRATION, calibration)
    return calibration


def _progress(log: Callable[[str], None]):
    """One line per logging step (step, loss, validation metric): progress without a progress bar in job logs."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = {k: round(v, 4) for k, v in (logs or {}).items() if k in ("loss", "eval_val_average_precision")}
            if shown:
                log(f"  step {state.global_step}/{state.max_steps}: {shown}")

    return Progress()


def answer_gate(scores: list[float], rows: list[dict], keep: float = 0.97) -> dict:
    """The no-answer gate: the score that the best own-answer sentence of `keep` of the validation questions
    reaches (a question whose shown sentences all score below it is not answered by them)."""
    best: dict[str, float] = {}
    for s, row in zip(scores, rows, strict=True):
        if row["label"]:
            best[row["question"]] = max(best.get(row["question"], 0.0), s)
    values = sorted(best.values())
    cut = values[int((1 - keep) * len(values))] if values else 0.0
    return {"threshold": round(cut * 0.999, 4), "questions": len(values), "keep": keep}
