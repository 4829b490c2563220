"""Training and evaluation data for the retriever: (question -> answer passage) pairs from the corpus's own
question-answer records, hard negatives mined from the current index, and consumer-style rewrites.

    pairs = training_pairs(cfg, retriever)           # [{anchor, positive, negative, record_id, consumer}]
    rows = consumer_eval_set(cfg, n=200)              # held-out consumer-style questions, gold record ids

Rules: questions of reserved MedQuAD documents are never trained on (asserted); the consumer evaluation set is
built from reserved documents only, excluding the dev questions, with its own seed, so it is out of training too.
A hard negative is the best hybrid hit whose record is neither the positive's record nor one merged with it as an
exact duplicate.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from core.corpus import clean_records, read_corpus, read_reserved
from core.errors import DataError
from core.types import Record, Retriever
from retriever.index_dir import embed_text
from train.config import RetrieverTrainConfig

# Consumer style, modelled on real patient messages (GenMedGPT-5k's and HealthCareMagic's openings): a story
# first, often a relative, lower case, no question mark, a typo, and a second question tacked on.
_CONTEXTS = (
    "My {who} was just told {pronoun} has {focus} and we are worried.",
    "Hi doctor, I am {age} years old and I was diagnosed with {focus} last month.",
    "I've been reading about {focus} online since my {who}'s appointment and I'm confused.",
    "Hello, my {who} ({age}) has {focus}.",
    "Our family doctor mentioned {focus} yesterday.",
)
_WHO = (("mother", "she"), ("father", "he"), ("son", "he"), ("daughter", "she"), ("husband", "he"), ("wife", "she"))
_FOLLOW_UPS = ("Also, {q}", "And {q}", "Another thing: {q}")
_TEMPLATE = re.compile(r"^(what (is|are) (\(are\) )?|how (to|can|is|are|do) |who is |what (causes|are the) )", re.I)


def read_dev(cfg: RetrieverTrainConfig) -> list[dict]:
    path = Path(cfg.data_dir) / cfg.dev
    if not path.is_file():
        raise DataError(f"dev split {path} does not exist (set dev)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters inside one longer word (the commonest typing slip)."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
    if not long:
        return text
    i = rng.choice(long)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def consumerize(question: str, focus: str, rng: random.Random, other: str | None = None) -> str:
    """A templated question as a patient might write it: context first, casual casing, maybe a typo, maybe a
    second question about the same condition."""
    who, pronoun = rng.choice(_WHO)
    ctx = rng.choice(_CONTEXTS).format(who=who, pronoun=pronoun, focus=focus.lower() or "this",
                                       age=rng.randint(19, 82))
    q = question.strip().rstrip("?").strip()
    q = q[0].lower() + q[1:] if q else q
    if rng.random() < 0.5:
        q = _TEMPLATE.sub(lambda m: rng.choice(("can you tell me ", "i want to know ", "please explain ")) +
                          m.group(0).lower(), q, count=1)
    text = f"{ctx} {q}" + ("?" if rng.random() < 0.6 else "")
    if other:
        o = other.strip().rstrip("?")
        text += " " + rng.choice(_FOLLOW_UPS).format(q=o[0].lower() + o[1:] + "?")
    if rng.random() < 0.5:
        text = _typo(text, rng)
    return text


def qa_records(cfg: RetrieverTrainConfig, reserved: set[str], *, want_reserved: bool) -> list[Record]:
    """Records with a question, after the index's own cleaning; reserved MedQuAD documents only or none."""
    out: list[Record] = []
    for spec in cfg.sources:
        records, _ = clean_records(read_corpus(spec, cfg.data_dir).records)
        for r in records:
            if not r.question:
                continue
            is_reserved = r.meta.get("document") in reserved
            if is_reserved == want_reserved:
                out.append(r)
    return out


def _focus(r: Record) -> str:
    return r.meta.get("focus") or r.title.split(":")[0]


def _siblings(records: list[Record]) -> dict[str, list[Record]]:
    by_focus: dict[str, list[Record]] = {}
    for r in records:
        by_focus.setdefault(_focus(r).lower(), []).append(r)
    return by_focus


def hard_negative(retriever: Retriever, query: str, positive_record: str) -> str | None:
    """The best hybrid hit from another record (exact duplicates of the positive count as the positive)."""
    for h in retriever.search(query, k=10, mode="hybrid"):
        if retriever.resolve_record(h.passage.record_id) != positive_record:
            return embed_text(h.passage)
    return None


def _title_key(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.split("\n", 1)[0].casefold()).split())


def same_question(text: str, positive: str, anchor: str) -> bool:
    """Whether a mined negative is titled as the positive or as the question itself: another source answering the
    same question ("Essential tremor: treatment" from MedlinePlus and from GHR), so not a negative. In the 4,000
    mined pairs such false negatives were common, and a cross-encoder trained with them stayed at the label
    prior."""
    key = _title_key(text)
    return key in (_title_key(positive), _title_key(anchor))


def reranker_negatives(retriever: Retriever, pair: dict, n: int) -> tuple[list[str], int]:
    """Up to n negatives for a training pair's query: its mined hard negative first, then the next hybrid hits from
    other records, without the same question from another source. Returns them and how many were dropped as such
    (the embedder's single hard negative is not filtered: its pairs were mined, trained and measured before)."""
    hits = [embed_text(h.passage) for h in retriever.search(pair["anchor"], k=n + 8, mode="hybrid")
            if retriever.resolve_record(h.passage.record_id) != pair["record_id"]]
    negatives: list[str] = []
    dropped = 0
    for text in [pair["negative"], *hits]:
        if len(negatives) == n or text == pair["positive"] or text in negatives:
            continue
        if same_question(text, pair["positive"], pair["anchor"]):
            dropped += 1
        else:
            negatives.append(text)
    return negatives, dropped


def training_pairs(cfg: RetrieverTrainConfig, retriever: Retriever, log=print) -> list[dict]:
    reserved = read_reserved(cfg.data_dir, cfg.reserved)
    records = qa_records(cfg, reserved, want_reserved=False)
    leaked = sorted({r.meta["document"] for r in records if r.meta.get("document") in reserved})
    if leaked:  # qa_records already drops them; this guards the rule against a future edit
        raise DataError(f"reserved MedQuAD documents in the retriever's training data: {', '.join(leaked[:5])}")
    rng = random.Random(cfg.seed)
    rng.shuffle(records)
    siblings = _siblings(records)
    pairs: list[dict] = []
    for r in records:
        if len(pairs) >= cfg.max_pairs:
            break
        rid = retriever.resolve_record(r.id)
        passages = retriever.passages_of(rid)
        if not passages:
            continue
        consumer = rng.random() < cfg.consumer_share
        query = r.question
        if consumer:
            others = [s.question for s in siblings.get(_focus(r).lower(), []) if s.id != r.id]
            query = consumerize(r.question, _focus(r), rng, rng.choice(others) if others and rng.random() < 0.4
                                else None)
        negative = hard_negative(retriever, query, rid)
        if negative is None:
            continue
        pairs.append({"anchor": query, "positive": embed_text(passages[0]), "negative": negative,
                      "record_id": rid, "consumer": consumer})
        if len(pairs) % 1000 == 0:
            log(f"  mined {len(pairs)} pairs")
    return pairs


def consumer_eval_set(cfg: RetrieverTrainConfig, n: int = 200, seed: int = 1234) -> list[dict]:
    """Held-out consumer-style questions: reserved documents only (never trained on), dev questions excluded.
    Rows: {question, gold_medquad_id, template_question}. Built on the fly (it holds corpus text)."""
    reserved = read_reserved(cfg.data_dir, cfg.reserved)
    dev_ids = {d["gold_medquad_id"] for d in read_dev(cfg)}
    records = [r for r in qa_records(cfg, reserved, want_reserved=True) if r.id not in dev_ids]
    rng = random.Random(seed)
    rng.shuffle(records)
    siblings = _siblings(records)
    rows = []
    for r in records[:n]:
        others = [s.question for s in siblings.get(_focus(r).lower(), []) if s.id != r.id]
        other = rng.choice(others) if others and rng.random() < 0.4 else None
        rows.append({"question": consumerize(r.question, _focus(r), rng, other), "gold_medquad_id": r.id,
                     "template_question": r.question})
    return rows
