"""Corpus readers and cleaning: MedQuAD XML, WikiDoc (MedAlpaca JSON/JSONL) and generic JSONL -> `Record`s.

    from core.corpus import read_corpus, clean_records
    read = read_corpus("medquad:medquad", data_dir="../shared/data")
    records, counts = clean_records(read.records)

Ids follow ../shared/data/README.md: MedQuAD `<subset number>:<file stem>:<k>` (k = 1-based position of the
<QAPair> in its file), WikiDoc `wikidoc:<index>` (0-based position in the file). Every cleaning rule counts the
records it touched; index_build writes the counts into the index manifest so the cleaning is measured.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import DataError
from core.types import Record

READERS = ("medquad", "wikidoc", "jsonl", "chat")
"""Every corpus reader; `chat` (dialogues) feeds fine-tuning only."""
INDEX_READERS = ("medquad", "wikidoc", "jsonl")
"""Readers whose records can be indexed (a dialogue is not a reference text)."""

# MedQuAD qtypes as a reader would say them in a title ("Ewing Sarcoma: treatment").
_QTYPE_TITLES = {"information": "overview", "exams and tests": "diagnosis", "considerations": "considerations"}


@dataclass
class CorpusRead:
    """Everything one reader produced: records plus what the manifest needs to know about the input."""

    spec: str
    records: list[Record]
    files: int
    sha256: str
    """Hash over (relative path, file hash) of every input file, in sorted order."""
    failed: list[str] = field(default_factory=list)
    """Input files that did not parse (relative paths); they were skipped."""
    skipped_empty: int = 0
    """Entries without answer text (MedQuAD subsets 10-12 had theirs removed upstream)."""


def _subset_source(folder: str) -> tuple[str, str]:
    """`1_CancerGov_QA` -> ("1", "medquad/CancerGov"); `8_NHLBI_QA_XML` -> ("8", "medquad/NHLBI")."""
    number, _, rest = folder.partition("_")
    name = re.sub(r"_QA(_XML)?$", "", rest)
    return number, f"medquad/{name}"


def read_medquad(root: Path, limit: int = 0) -> CorpusRead:
    """All `<n>_<name>/*.xml` subsets under root; one Record per QAPair with a non-empty answer."""
    folders = sorted((p for p in root.iterdir() if p.is_dir() and p.name.split("_")[0].isdigit()),
                     key=lambda p: int(p.name.split("_")[0])) if root.is_dir() else []
    if not folders:
        raise DataError(f"no MedQuAD subset folders (like 1_CancerGov_QA/) under {root}; pass --data-dir")
    records: list[Record] = []
    failed: list[str] = []
    digest = hashlib.sha256()
    files = skipped = 0
    for folder in folders:
        number, source = _subset_source(folder.name)
        for path in sorted(folder.glob("*.xml")):
            data = path.read_bytes()
            files += 1
            rel = f"{folder.name}/{path.name}"
            digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
            try:
                doc = ET.fromstring(data)
            except ET.ParseError:
                failed.append(rel)
                continue
            focus = " ".join((doc.findtext("Focus") or path.stem).split())
            url = doc.get("url", "")
            for k, qa in enumerate(doc.iter("QAPair"), start=1):
                answer = qa.findtext("Answer") or ""
                if not answer.strip():
                    skipped += 1
                    continue
                q = qa.find("Question")
                qtype = (q.get("qtype", "") if q is not None else "").strip()
                records.append(Record(
                    id=f"{number}:{path.stem}:{k}",
                    title=f"{focus}: {_QTYPE_TITLES.get(qtype, qtype)}" if qtype else focus,
                    text=answer,
                    source=source,
                    url=url,
                    question=" ".join((q.text or "").split()) if q is not None else "",
                    meta={"focus": focus, "qtype": qtype, "document": f"{number}:{path.stem}"},
                ))
            if limit and len(records) >= limit:
                break
        if limit and len(records) >= limit:
            records = records[:limit]
            break
    return CorpusRead("", records, files, digest.hexdigest(), failed, skipped)


def _json_rows(path: Path) -> list[dict]:
    """A JSON list, or JSONL (one object per line). Errors name the file and line."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    if not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: every entry must be a JSON object")
    return rows


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file; one-line DataErrors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path}:{n}: not valid JSON") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object")
            yield n, row


def read_wikidoc(path: Path, limit: int = 0) -> CorpusRead:
    """MedAlpaca WikiDoc: `{instruction, input, output}` rows; `input` is the question, `output` the answer."""
    rows = _json_rows(path)
    records, skipped = [], 0
    for i, row in enumerate(rows):
        question, answer = str(row.get("input") or "").strip(), str(row.get("output") or "")
        if not answer.strip():
            skipped += 1
            continue
        # WikiDoc has no titles; its question reads like one ("What are the symptoms of Allergy?").
        records.append(Record(id=f"wikidoc:{i}", title=question or f"WikiDoc {i}", text=answer,
                              source="wikidoc", question=question))
        if limit and len(records) >= limit:
            break
    return CorpusRead("", records, 1, hashlib.sha256(path.read_bytes()).hexdigest(), [], skipped)


def read_dialogues(path: Path, limit: int = 0) -> CorpusRead:
    """Patient-doctor dialogues, `{instruction, input, output}` rows (GenMedGPT-5k, ChatDoctor HealthCareMagic-100k,
    iCliniq): `input` is the patient's message, `output` the doctor's answer. Ids are `<file stem>:<index>`.
    Used for fine-tuning only; these are not reference text and are never indexed."""
    rows = _json_rows(path)
    records, skipped = [], 0
    for i, row in enumerate(rows):
        question, answer = str(row.get("input") or "").strip(), str(row.get("output") or "")
        if not answer.strip() or not question:
            skipped += 1
            continue
        records.append(Record(id=f"{path.stem}:{i}", title=" ".join(question.split()[:12]), text=answer,
                              source="chat", question=question, meta={"qtype": "dialogue"}))
        if limit and len(records) >= limit:
            break
    return CorpusRead("", records, 1, hashlib.sha256(path.read_bytes()).hexdigest(), [], skipped)


def read_jsonl(path: Path, limit: int = 0) -> CorpusRead:
    """Generic corpus: `{id, title, text, url?, source?}` per line."""
    records, skipped = [], 0
    for n, row in enumerate(_json_rows(path), start=1):
        missing = [f for f in ("id", "title", "text") if f not in row]
        if missing:
            raise DataError(f"{path}: entry {n} lacks {', '.join(missing)}")
        if not str(row["text"]).strip():
            skipped += 1
            continue
        records.append(Record(id=str(row["id"]), title=str(row["title"]), text=str(row["text"]),
                              source=str(row.get("source") or path.stem), url=str(row.get("url") or "")))
        if limit and len(records) >= limit:
            break
    return CorpusRead("", records, 1, hashlib.sha256(path.read_bytes()).hexdigest(), [], skipped)


def read_corpus(spec: str, data_dir: str | Path, limit: int = 0) -> CorpusRead:
    """Read one `<reader>:<path>` corpus spec; the path is relative to data_dir unless absolute."""
    reader, _, rel = spec.partition(":")
    path = Path(data_dir) / rel
    if not Path(data_dir).is_dir():
        raise DataError(f"data directory {data_dir} does not exist; pass --data-dir or set MEDCITE_DATA_DIR")
    if not path.exists():
        raise DataError(f"corpus {spec!r}: {path} does not exist (data dir {data_dir})")
    readers = {"medquad": read_medquad, "wikidoc": read_wikidoc, "jsonl": read_jsonl, "chat": read_dialogues}
    if reader not in readers:
        raise DataError(f"corpus {spec!r}: unknown reader {reader!r} ({', '.join(READERS)})")
    read = readers[reader](path, limit)
    read.spec = spec
    return read


# --- cleaning --------------------------------------------------------------------------------------------------

CLEANING_RULES = ("key_points", "restated_question", "whitespace", "duplicate_answers")
_KEY_POINTS = re.compile(r"\s*Key Points\s*\n.*?\n[ \t]*\n", re.S)
_LEADING_QUESTION = re.compile(r"\s*((?:What|How|Is|Are|Who|Do|Does|Can|When|Where|Why|Which)\b[^?\n]{0,300}\?)\s+")


def read_reserved(data_dir: str | Path, reserved: str, setting: str = "reserved") -> set[str]:
    """MedQuAD documents (`<subset>:<file stem>`) kept for evaluation: no training job may use their QA pairs.
    `setting` names the config key in the error (the fine-tune's `data.reserved`, the retriever job's `reserved`)."""
    path = Path(data_dir) / reserved
    if not path.is_file():
        raise DataError(f"reserved-documents list {path} does not exist; it keeps evaluation documents out of "
                        f"training (set {setting})")
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def strip_key_points(text: str) -> str:
    """CancerGov answers open with a "Key Points" bullet block that the section then repeats: drop the block."""
    m = _KEY_POINTS.match(text)
    return text[m.end():] if m and text[m.end():].strip() else text


def strip_restated_question(text: str, focus: str) -> str:
    """GARD answers open by restating the question ("What are the signs and symptoms of X? ..."). Only a
    leading question that names the record's focus counts: elsewhere an opening question is real content
    ("Is it hard for your child to sit still?")."""
    m = _LEADING_QUESTION.match(text)
    if m and focus and focus.lower() in m.group(1).lower() and text[m.end():].strip():
        return text[m.end():]
    return text


def normalise_whitespace(text: str) -> str:
    """Collapse indentation and runs of spaces; keep one newline between non-empty lines."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def clean_text(text: str, focus: str = "") -> tuple[str, list[str]]:
    """One record's text after every per-record rule, and the rules that changed it (a pure function of the
    record, so the Ray engine runs it in parallel tasks)."""
    touched = []
    for rule, fn in (("key_points", strip_key_points),
                     ("restated_question", lambda t: strip_restated_question(t, focus)),
                     ("whitespace", normalise_whitespace)):
        new = fn(text)
        if new != text:
            touched.append(rule)
            text = new
    return text, touched


def drop_duplicates(records: list[Record], counts: Counter[str]) -> list[Record]:
    """Keep the first record of every exact answer text (empty ones dropped); the dropped ids are remembered in
    its `duplicate_ids`, so a citation of either id can be resolved. Global, so it runs in one process."""
    kept: list[Record] = []
    first_with_text: dict[str, Record] = {}
    for rec in records:
        if not rec.text:
            continue
        if rec.text in first_with_text:
            first_with_text[rec.text].duplicate_ids.append(rec.id)
            counts["duplicate_answers"] += 1
            continue
        first_with_text[rec.text] = rec
        kept.append(rec)
    return kept


def clean_records(records: list[Record]) -> tuple[list[Record], dict[str, int]]:
    """Apply every rule in order; returns the kept records and, per rule, how many records it touched.

    Exact duplicate answers (after the other rules) keep the first record (`drop_duplicates`)."""
    counts: Counter[str] = Counter({rule: 0 for rule in CLEANING_RULES})
    for rec in records:
        rec.text, touched = clean_text(rec.text, rec.meta.get("focus", ""))
        counts.update(touched)
    return drop_duplicates(records, counts), dict(counts)
