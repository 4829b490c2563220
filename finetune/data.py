"""Training-set preparation for the fine-tuning job: sources -> cleaned, deduplicated, mixed, RAG-formatted JSONL.

    medcite finetune prepare --config configs/finetune-smollm2.yaml
    # -> <work_dir>/<run_name>/data/{train,eval}.jsonl, data_report.json, data_card.md

Each example is a conversational prompt-completion row: the prompt is exactly what the server would send for the
question (same `build_messages`, same index, same k and budget), the completion is the reference answer with
[n] markers after the sentences that a shown passage supports. With probability `gold_probability` a passage of
the answer's own record is among the shown ones; a share of examples uses the no-retrieval prompt.

Every cleaning rule is counted (rows touched, an example before/after) in the data report, because the
write-ups found that forum filler ("Hello, welcome to Chat Doctor") and OCR noise ("HiT hanks") teach the model
to produce them. MedQuAD documents listed as reserved for evaluation are excluded, and that is asserted.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.config import config_to_dict
from core.corpus import (
    normalise_whitespace,
    read_corpus,
    read_reserved,
    strip_key_points,
    strip_restated_question,
)
from core.errors import DataError
from core.files import atomic_write_json, atomic_write_jsonl, atomic_write_text
from core.markers import strip_markers
from core.quality import split_sentences
from core.types import Hit, Record
from finetune.config import FinetuneDataConfig
from generator.prompt import PROMPT_VERSION, build_messages
from pipeline.verify.judges import load_judges, support_judge
from pipeline.verify.support import SupportJudge, attribute

# --- cleaning rules for dialogue answers (each returns the new text) ---------------------------------------------

_FILLER_OPENERS = re.compile(
    r"^\s*(?:(?:hi|hello|hey|dear)\b[^.!?\n]{0,40}?[.,!]?\s*)?"
    r"(?:(?:welcome|thanks?(?: you)?|thank you)\s+(?:to|for)\s+(?:chat\s*doctor|icliniq|healthcaremagic|hcm|"
    r"(?:posting |writing |asking )?(?:your |the )?(?:query|question|message|trust)[^.!?\n]{0,60}?)[.,!]*\s*)+",
    re.I)
_GREETING_ONLY = re.compile(r"^\s*(?:hi|hello|hey|dear)(?:\s+(?:there|sir|madam|dear|friend))?[.,!]\s+", re.I)
_SIGN_OFFS = re.compile(
    r"(?:\s*(?:hope (?:this|i have) (?:helps?|answered[^.!?\n]*)|take care|wish(?:ing)? you (?:a )?good health|"
    r"(?:best |kind |warm )?regards|thanks? (?:and|&) regards|(?:dr\.?|doctor)\s*chat\s*doctor|chat\s*doctor|"
    r"feel free to (?:ask|contact)[^.!?\n]*|let me know if[^.!?\n]*|any (?:more|further) quer(?:y|ies)[^.!?\n]*)"
    r"[\s.,!:;-]*)+$", re.I)
_OCR_GLUE = re.compile(r"\b(Hi|Hello|Dear)T\s?(hanks?|hank you)\b")
_OCR_SPLIT_THANKS = re.compile(r"\bT hanks?\b")
_WELCOME_ANYWHERE = re.compile(r"(?:hello|hi)?[,.]?\s*welcome to chat\s*doctor[.,!]?\s*", re.I)


def fix_ocr(text: str) -> str:
    """OCR-style glue from the ChatDoctor scrape: "HiT hanks" -> "Hi. Thanks", "T hanks" -> "Thanks"."""
    text = _OCR_GLUE.sub(lambda m: f"{m.group(1)}. T{m.group(2)}", text)
    return _OCR_SPLIT_THANKS.sub(lambda m: "T" + m.group(0)[2:], text)


def strip_filler_openers(text: str) -> str:
    """Forum openers: "Hello, welcome to Chat Doctor", "Hi, thanks for your query", a bare "Hi." greeting."""
    new = _FILLER_OPENERS.sub("", text, count=1)
    new = _WELCOME_ANYWHERE.sub(" ", new)
    new = _GREETING_ONLY.sub("", new, count=1)
    new = new.lstrip(" ,.!")
    return new[:1].upper() + new[1:] if new else new


def strip_sign_offs(text: str) -> str:
    """Forum sign-offs at the end: "Hope this helps", "Regards, Chat Doctor", "Take care", "Wish you good health"."""
    new = _SIGN_OFFS.sub("", text).rstrip(" ,;:-")
    if new and new[-1] not in ".!?":
        new += "."
    return new if new.strip(". ") else text


_FILLER_SENTENCE = re.compile(
    r"^(?:ok(?:ay)?|thanks?(?: you)?(?: again)?|good luck|all the best|bye|cheers|get well soon|"
    r"i hope (?:so|you feel better(?: soon)?)|stay safe|regards)[.!]*$", re.I)


def strip_trailing_filler_sentence(text: str) -> str:
    """A last sentence made only of filler ("Thanks.", "Good luck!") carries nothing."""
    parts = split_sentences(text)
    if len(parts) > 1 and _FILLER_SENTENCE.match(parts[-1].strip()):
        return " ".join(parts[:-1])
    return text


Rule = Callable[[str, Record], str]
CHAT_RULES: tuple[tuple[str, Rule], ...] = (
    ("ocr_glue", lambda t, r: fix_ocr(t)),
    ("filler_opener", lambda t, r: strip_filler_openers(t)),
    ("sign_off", lambda t, r: strip_sign_offs(t)),
    ("trailing_filler_sentence", lambda t, r: strip_trailing_filler_sentence(t)),
    ("whitespace", lambda t, r: normalise_whitespace(t)),
)
# Reference text (MedQuAD, WikiDoc) gets the index's own rules, so targets match the passages the index serves.
REFERENCE_RULES: tuple[tuple[str, Rule], ...] = (
    ("key_points", lambda t, r: strip_key_points(t)),
    ("restated_question", lambda t, r: strip_restated_question(t, r.meta.get("focus", ""))),
    ("whitespace", lambda t, r: normalise_whitespace(t)),
)

# --- sentence support (which passage a target sentence can cite): the serving definition, pipeline.verify.support ------------

def cited_target(answer: str, passages: Sequence[str], judge: SupportJudge, threshold: float,
                 titles: Sequence[str] = ()) -> tuple[str, list[int]]:
    """The answer with [n] after each sentence that passage n supports (pipeline.verify.support.attribute: the rule the
    server verifies answers by, so training teaches exactly the citations serving keeps)."""
    verdicts = attribute(answer, passages, titles, judge, threshold)
    used = sorted({n for v in verdicts for n in v.citations})
    return " ".join(v.text for v in verdicts), used


# --- near-duplicates -------------------------------------------------------------------------------------------------

def _shingles(text: str, n: int = 5) -> set[int]:
    toks = re.findall(r"[a-z0-9]+", text.lower())
    if len(toks) < n:
        return {zlib.crc32(" ".join(toks).encode())}
    return {zlib.crc32(" ".join(toks[i:i + n]).encode()) for i in range(len(toks) - n + 1)}


def near_duplicates(texts: Sequence[str], threshold: float, bands: int = 16, rows: int = 8) -> dict[int, int]:
    """{index: index of the earlier text it nearly duplicates}: MinHash + LSH banding for candidate pairs, then
    exact word-5-gram Jaccard >= threshold. Deterministic (crc32 shingles, fixed hash seeds)."""
    import numpy as np

    sets = [_shingles(t) for t in texts]
    perms = bands * rows
    sigs = np.zeros((len(sets), perms), dtype=np.uint64)
    rng = np.random.default_rng(12345)
    prime = np.uint64((1 << 61) - 1)
    a = rng.integers(1, 1 << 31, size=perms, dtype=np.uint64)
    b = rng.integers(0, 1 << 31, size=perms, dtype=np.uint64)
    dup_of: dict[int, int] = {}
    index: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for j, shingles in enumerate(sets):
        x = np.fromiter(shingles, dtype=np.uint64, count=len(shingles))
        sig = ((x[None, :] * a[:, None] + b[:, None]) % prime).min(axis=1)
        keys = [(band, sig[band * rows:(band + 1) * rows].tobytes()) for band in range(bands)]
        cands = sorted({i for key in keys for i in index[key]})
        if cands:
            # the share of agreeing signature slots estimates Jaccard (std ~0.035 at 128 slots); only likely
            # pairs get the exact check. Templated answers (2,000 GARD "Human Phenotype Ontology" lists) share
            # buckets without being duplicates, so a pairwise exact check there would be quadratic in Python.
            est = (sigs[cands] == sig).mean(axis=1)
            for i in np.asarray(cands)[est >= threshold - 0.1].tolist():
                inter = len(sets[i] & shingles)
                if inter / (len(sets[i]) + len(shingles) - inter) >= threshold:
                    dup_of[j] = i
                    break
        sigs[j] = sig
        if j not in dup_of:  # duplicates are not indexed: their original stands for them
            for key in keys:
                index[key].append(j)
    return dup_of


# --- the pipeline ----------------------------------------------------------------------------------------------------

@dataclass
class Candidate:
    """One question/answer pair before it becomes a training example."""

    id: str
    reader: str
    """Which source reader produced it (the key of `mix`): chat, wikidoc, medquad, jsonl."""
    qtype: str
    question: str
    answer: str
    record_id: str | None
    """The index record whose passages are this answer's gold passages (None for dialogues)."""
    document: str = ""


@dataclass
class PrepareReport:
    """What preparation did, for the data card."""

    read: dict[str, int] = field(default_factory=dict)
    reserved_excluded: int = 0
    cleaning: dict[str, dict] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    available: dict[str, int] = field(default_factory=dict)
    drawn: dict[str, int] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    cited_share: float = 0.0
    answer_tokens: dict[str, float] = field(default_factory=dict)


def _count_rule(report: dict[str, dict], rule: str, before: str, after: str) -> None:
    """Count a touched row; keep two examples, each cut around where the rule changed the text."""
    entry = report.setdefault(rule, {"rows": 0, "examples": []})
    entry["rows"] += 1
    if len(entry["examples"]) < 2:
        i = next((n for n, (x, y) in enumerate(zip(before, after, strict=False)) if x != y), min(len(before), len(after)))
        start = max(0, i - 40)
        lead = "..." if start else ""
        entry["examples"].append({"before": lead + before[start:start + 160], "after": lead + after[start:start + 160]})


def load_candidates(cfg: FinetuneDataConfig, reserved: set[str], report: PrepareReport,
                    log: Callable[[str], None] = print) -> list[Candidate]:
    """Read every source, drop reserved MedQuAD documents, clean answers (counted per rule)."""
    cands: list[Candidate] = []
    for spec in cfg.sources:
        reader = spec.partition(":")[0]
        read = read_corpus(spec, cfg.data_dir)
        records: list[Record] = read.records
        report.read[spec] = len(records)
        if reader == "medquad":
            kept = [r for r in records if r.meta.get("document") not in reserved]
            report.reserved_excluded += len(records) - len(kept)
            records = kept
        rules = CHAT_RULES if reader == "chat" else REFERENCE_RULES
        for rec in records:
            text = rec.text
            for rule, fn in rules:
                new = fn(text, rec)
                if new != text:
                    _count_rule(report.cleaning, rule, text, new)
                    text = new
            rec.text = text
        for rec in records:
            if not rec.text.strip() or not rec.question.strip():
                continue
            cands.append(Candidate(
                id=rec.id, reader=reader, qtype=rec.meta.get("qtype", "") or reader, question=rec.question.strip(),
                answer=rec.text.strip(), record_id=None if reader == "chat" else rec.id,
                document=rec.meta.get("document", "")))
        log(f"  {spec}: {len(records)} records after cleaning")
    return cands


def dedupe_and_filter(cands: list[Candidate], cfg: FinetuneDataConfig, count_tokens: Callable[[str], int],
                      report: PrepareReport) -> list[Candidate]:
    """Drop exact and near-duplicate answers (keeping the first) and answers over max_answer_tokens."""
    seen: dict[str, int] = {}
    unique: list[Candidate] = []
    for c in cands:
        key = " ".join(re.findall(r"[a-z0-9]+", c.answer.lower()))
        if key in seen:
            continue
        seen[key] = 1
        unique.append(c)
    report.dropped["exact_duplicate_answers"] = len(cands) - len(unique)
    dup_of = near_duplicates([c.answer for c in unique], cfg.near_duplicate_threshold)
    report.dropped["near_duplicate_answers"] = len(dup_of)
    unique = [c for i, c in enumerate(unique) if i not in dup_of]
    kept = [c for c in unique if count_tokens(c.answer) <= cfg.max_answer_tokens]
    report.dropped[f"answer_over_{cfg.max_answer_tokens}_tokens"] = len(unique) - len(kept)
    return kept


def draw(cands: list[Candidate], cfg: FinetuneDataConfig, report: PrepareReport) -> list[Candidate]:
    """Sample per reader by the mix (seeded), then return them in a deterministic order."""
    rng = random.Random(cfg.seed)
    by_reader: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        by_reader[c.reader].append(c)
    total = sum(cfg.mix.values())
    drawn: list[Candidate] = []
    for reader in sorted(by_reader):
        pool = sorted(by_reader[reader], key=lambda c: c.id)
        report.available[reader] = len(pool)
        want = round(cfg.size * cfg.mix.get(reader, 0.0) / total)
        pick = rng.sample(pool, min(want, len(pool)))
        report.drawn[reader] = len(pick)
        drawn.extend(pick)
    return drawn


def stratified_split(cands: list[Candidate], eval_share: float, seed: int) -> tuple[list[Candidate], list[Candidate]]:
    """Per (reader, qtype) stratum, a seeded shuffle puts round(eval_share * n) examples into eval (at least one
    from any stratum of 2+ when eval_share > 0), so the held-out set has every source and question type."""
    strata: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for c in sorted(cands, key=lambda c: c.id):
        strata[(c.reader, c.qtype)].append(c)
    train, held = [], []
    for key in sorted(strata):
        group = strata[key]
        random.Random(f"{seed}:{key[0]}:{key[1]}").shuffle(group)
        n = round(eval_share * len(group))
        if eval_share > 0 and n == 0 and len(group) >= 2:
            n = 1
        held.extend(group[:n])
        train.extend(group[n:])
    return train, held


def _pick_gold(retriever, cand: Candidate, hits: list[Hit]) -> Hit | None:
    """The gold record's passage: the best-ranked one among the hits, else its first passage in the index."""
    record = retriever.resolve_record(cand.record_id)
    for h in hits:
        if h.passage.record_id == record:
            return h
    passages = retriever.passages_of(record)
    return Hit(passages[0], 0.0, 0) if passages else None


def to_example(cand: Candidate, retriever, cfg: FinetuneDataConfig, rng: random.Random,
               count_tokens: Callable[[str], int], judges=None) -> dict:
    """One conversational prompt-completion row, built with the server's prompt builder."""
    base = {"id": cand.id, "source": cand.reader, "qtype": cand.qtype, "record_id": cand.record_id}
    if rng.random() < cfg.no_retrieval_share:
        messages, _ = build_messages(cand.question, None, count_tokens, cfg.prompt_tokens)
        return {**base, "format": "no_retrieval", "prompt": messages,
                "completion": [{"role": "assistant", "content": cand.answer}], "cited": []}
    pool = retriever.search(cand.question, k=cfg.k + 10, mode=cfg.mode)
    gold = _pick_gold(retriever, cand, pool) if cand.record_id else None
    show_gold = gold is not None and rng.random() < cfg.gold_probability
    others = [h for h in pool if gold is None or h.passage.record_id != gold.passage.record_id]
    hits = others[:cfg.k - 1] if show_gold else others[:cfg.k]
    if show_gold:
        hits.insert(rng.randrange(len(hits) + 1), gold)
    hits = [Hit(h.passage, h.score, i) for i, h in enumerate(hits, start=1)]
    messages, shown = build_messages(cand.question, hits, count_tokens, cfg.prompt_tokens)
    judge, threshold = support_judge(retriever.embed, cfg.verify, judges)  # the judge serving verifies with
    answer = cand.answer
    if show_gold:
        # The target is the part of the answer that the shown gold passage supports, so the model learns to say
        # what its passages say (a long answer runs past one 200-token passage).
        gold_shown = next((p for p in shown if p.hit.passage.id == gold.passage.id), None)
        if gold_shown is not None:
            on_gold = attribute(answer, [gold_shown.text], [gold.passage.title], judge, threshold)
            supported = [strip_markers(v.text) for v in on_gold if v.supported]
            answer = " ".join(supported) if supported else answer
        else:
            show_gold = False
    target, used = cited_target(answer, [p.text for p in shown], judge, threshold,
                                [p.hit.passage.title for p in shown])
    fmt = "rag_gold" if show_gold else "rag_no_gold"
    return {**base, "format": fmt, "prompt": messages, "completion": [{"role": "assistant", "content": target}],
            "cited": used}


def prepare(cfg: FinetuneDataConfig, retriever, count_tokens: Callable[[str], int], out_dir: Path,
            log: Callable[[str], None] = print) -> PrepareReport:
    """Build train.jsonl / eval.jsonl / data_report.json / data_card.md in out_dir (atomically, files last)."""
    reserved = read_reserved(cfg.data_dir, cfg.reserved, "data.reserved")
    report = PrepareReport()
    log(f"reading {len(cfg.sources)} source(s) from {cfg.data_dir}")
    cands = load_candidates(cfg, reserved, report, log)
    cands = dedupe_and_filter(cands, cfg, count_tokens, report)
    cands = draw(cands, cfg, report)
    train, held = stratified_split(cands, cfg.eval_share, cfg.seed)
    leaked = sorted({c.document for c in train + held if c.reader == "medquad" and c.document in reserved})
    if leaked:  # cannot happen through load_candidates; asserted because the evaluation depends on it
        raise DataError(f"reserved MedQuAD documents in the training data: {', '.join(leaked[:5])}")
    rng = random.Random(f"{cfg.seed}:format")
    log(f"formatting {len(train)} train + {len(held)} eval examples with {cfg.mode} retrieval (k={cfg.k})")
    judges = load_judges(cfg.verify.judges, cfg.verify.judge_precision)  # the trained faithfulness judge when `make demo` built it
    rows = {name: [to_example(c, retriever, cfg, rng, count_tokens, judges) for c in part]
            for name, part in (("train", train), ("eval", held))}
    report.split = {name: len(r) for name, r in rows.items()}
    report.formats = dict(Counter(r["format"] for r in rows["train"] + rows["eval"]))
    all_rows = rows["train"] + rows["eval"]
    report.cited_share = round(sum(bool(r["cited"]) for r in all_rows) / max(1, len(all_rows)), 4)
    lengths = sorted(count_tokens(r["completion"][0]["content"]) for r in all_rows)
    if lengths:
        report.answer_tokens = {"mean": round(sum(lengths) / len(lengths), 1), "p50": lengths[len(lengths) // 2],
                                "max": lengths[-1]}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, r in rows.items():
        atomic_write_jsonl(out_dir / f"{name}.jsonl", r, sort_keys=True)
    payload = {"config": config_to_dict(cfg), "prompt_version": PROMPT_VERSION, "retriever": retriever.fingerprint,
               "fingerprint": data_fingerprint(out_dir), **asdict(report)}
    atomic_write_text(out_dir / "data_card.md", data_card(payload))
    atomic_write_json(out_dir / "data_report.json", payload)  # last: its presence means the data is complete
    return report


def data_fingerprint(out_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("train.jsonl", "eval.jsonl"):
        digest.update((out_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def data_card(p: dict) -> str:
    """A short human-readable card for the prepared data."""
    c = p["config"]
    lines = [
        "# Fine-tuning data card", "",
        f"Prompt version `{p['prompt_version']}`, index `{p['retriever']}`, data fingerprint `{p['fingerprint']}`, "
        f"seed {c['seed']}.", "",
        "## Sources", "", "| source | records read |", "|---|---|",
        *[f"| `{s}` | {n} |" for s, n in p["read"].items()], "",
        f"Reserved MedQuAD QA pairs excluded (documents in `{c['reserved']}`): {p['reserved_excluded']}.", "",
        "## Cleaning (rows touched)", "", "| rule | rows | example before -> after |", "|---|---|---|",
    ]
    for rule, e in p["cleaning"].items():
        ex = e["examples"][0] if e["examples"] else None
        shown = (f"`{ex['before'][:80]!r}` -> `{ex['after'][:80]!r}`" if ex else "").replace("|", "\\|")
        lines.append(f"| {rule} | {e['rows']} | {shown} |")
    lines += ["", "## Filters", "", "| filter | dropped |", "|---|---|",
              *[f"| {k} | {v} |" for k, v in p["dropped"].items()], "",
              "## Mix", "", "| reader | target share | available | drawn |", "|---|---|---|---|"]
    total = sum(c["mix"].values())
    for reader in p["available"]:
        lines.append(f"| {reader} | {c['mix'].get(reader, 0) / total:.0%} | {p['available'][reader]} | "
                     f"{p['drawn'].get(reader, 0)} |")
    lines += ["", "## Examples", "",
              f"Split: {p['split']}. Formats: {p['formats']}. Share whose target cites a passage: "
              f"{p['cited_share']:.1%}. Answer tokens: {p['answer_tokens']}.", ""]
    return "\n".join(lines)


def load_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
