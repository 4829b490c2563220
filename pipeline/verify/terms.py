"""The medical term guard: drug names, doses and words a small model invents must come from the evidence.

    problems = term_problems(sentence, evidence=question + passages, knows=retriever.knows)
    # ["drug name absent from the sources: ibuprofen", "term absent from the sources and the corpus: peglotase"]

Three rules, each independent of the model behind the answer:
- a word that occurs neither in the question, nor in the passages shown, nor anywhere in the indexed corpus (the
  BM25 vocabulary, `knows`) is an invented term ("allopurruvolizide", "mebendazil", "peglotase");
- a drug name (a word carrying a USAN/INN drug stem such as -mab, -nib, -pril, -olol, -cillin, -floxacin) must
  occur in the question or the passages: a real drug the evidence does not name is still an unsourced claim;
- a number with a unit (a dose, a lab value, a percentage) must occur in the question or the passages.

Why not the `drug-named-entity-recognition` package: it unpickles its 1.6 MB dictionary at import (this project
loads no pickles: a pickle runs code when loaded) and resolves OMOP ids through a web API. The USAN stems are
the naming scheme the field maintains for new drugs, and the corpus vocabulary covers every drug the sources
name. Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# USAN / INN stems (USAN Council "stems" list): suffixes that mark a word as a drug name. Long enough to avoid
# ordinary words (-ase and -ine were left out: "disease", "increase", "medicine").
DRUG_STEMS = (
    "mab", "nib", "pril", "sartan", "olol", "dipine", "statin", "azole", "cillin", "mycin", "micin", "cycline",
    "floxacin", "oxacin", "vir", "parin", "azepam", "azolam", "barbital", "caine", "profen", "thiazide",
    "triptan", "setron", "prazole", "tidine", "lukast", "gliptin", "gliflozin", "glitazone", "afil", "platin",
    "taxel", "rubicin", "trexate", "dronate", "cept", "semide", "terol", "tropium", "conazole", "fungin",
    "sone", "olone", "lamide", "pramine", "triptyline", "oxetine", "faxine", "peridone", "apine", "zolid",
    "penem", "quine", "vudine", "navir", "previr", "asvir", "grel", "xaban", "gatran", "tinib", "zumab",
    "ximab", "umab", "kinra", "pegol", "lutamide", "relin", "glinide", "formin", "gliptin", "tide",
)
_DRUG = re.compile(rf"[a-z]{{3,}}(?:{'|'.join(sorted(set(DRUG_STEMS), key=len, reverse=True))})$")
_COMMON_NOT_DRUGS = frozenset("""peptide peptides nucleotide nucleotides override decide decided beside inside
outside aside provide provided guide guides wide side sides tide slide divide divided suicide pesticide
pesticides herbicide insecticide fungicide genocide homicide oxide dioxide peroxide fluoride chloride sulfide
bromide iodide cyanide hydroxide person reason season lesson poison mycin concept concepts except
accept accepts intercept percept cholesterol sterol sterols""".split())  # noqa: SIM905

UNITS = (r"mg/kg|mg/dl|mg/l|mmol/l|µg|mcg|ug|mg|g|kg|ml|l|iu|units?|mmol|meq|mm ?hg|bpm|%|percent|"
         r"hours?|days?|weeks?|times a day")
_DOSE = re.compile(rf"\b(\d+(?:[.,]\d+)?)\s*({UNITS})\b", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]")


def _norm_dose(number: str, unit: str) -> str:
    return f"{number.replace(',', '.')} {unit.lower().replace(' ', '')}"


def doses(text: str) -> set[str]:
    return {_norm_dose(n, u) for n, u in _DOSE.findall(text)}


def is_drug_name(word: str) -> bool:
    w = word.lower()
    return len(w) >= 6 and w not in _COMMON_NOT_DRUGS and bool(_DRUG.search(w))


def evidence_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)} | {w.lower() for part in _WORD.findall(text)
                                                       for w in part.split("-") if w}


def term_problems(sentence: str, evidence: str, knows: Callable[[str], bool] | None,
                  evidence_vocab: set[str] | None = None) -> list[str]:
    """What in `sentence` the evidence (question + passages) does not back, as warnings; empty when clean."""
    vocab = evidence_vocab if evidence_vocab is not None else evidence_words(evidence)
    problems: list[str] = []
    for token in _WORD.findall(sentence):
        # a hyphenated compound ("chest-related") is judged by its parts, each of which must be backed
        for word in {w for w in token.lower().split("-") if w}:
            if len(word) < 4 or word in vocab or word.rstrip("s") in vocab or word + "s" in vocab:
                continue
            if is_drug_name(word):
                problems.append(f"drug name absent from the sources: {word}")
            elif knows is not None and not knows(word):
                problems.append(f"term absent from the sources and the corpus: {word}")
    known_doses = doses(evidence)
    for n, u in _DOSE.findall(sentence):
        if _norm_dose(n, u) not in known_doses:
            problems.append(f"number absent from the sources: {n} {u}")
    return sorted(set(problems))
