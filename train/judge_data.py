"""The judges' training rows, from this corpus (train/judges.py trains on them; benchmarks/judges.py builds its
probe sets with the same functions from reserved documents).

Faithfulness rows (MiniCheck / AlignScore / FactCC style): a passage of a non-reserved record; positives are its
own sentences and meaning-preserving rewrites of them (train.perturb.paraphrase); negatives are the same
sentences altered in meaning (negation, numbers, direction, quantifiers, conditions, a medical term swapped,
another condition's sentence put under this one's name, a true sentence merged with another record's claim) and
true sentences of other records the passage does not hold (the same document's other sections first).
Answerhood rows (MedQuAD's structure): a record's question, templated or rewritten as a patient would write it
(train.data.consumerize), against sentences of its own answer (positives) and against sentences of the
same document's other answers ("research" is not "treatment") and of other conditions' answers of the same kind.
Every sentence is shown as "title\\nsentence", as the pipeline shows it.

Reserved MedQuAD documents are never used (asserted). One document in 20 is held out as validation.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable

from core.corpus import clean_records, read_corpus, read_reserved
from core.errors import DataError
from core.quality import content_words, split_sentences
from core.types import Passage, Record
from pipeline.verify.support import aligned_window
from train import perturb
from train.config import JudgeTrainConfig
from train.data import consumerize

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


# --- the split -----------------------------------------------------------------------------------------------------

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
