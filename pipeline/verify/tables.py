"""GARD's symptom tables, read back into lists: the corpus flattened each into one line, and quoted sentence by
sentence the list vanished and only its lead-in remained."""

from __future__ import annotations

import re

# GARD's symptom tables, flattened into one line by the corpus: "Signs and Symptoms Approximate number of patients
# (when available) Abnormality of the palate 90% Microcephaly 90% Albinism - ... - The Human Phenotype Ontology
# (HPO) has collected ...". Quoted sentence by sentence, the list vanished and only its lead-in remained.
HPO_TABLE = re.compile(r"Signs and Symptoms Approximate number of patients \(when available\)\s+(.*?)"
                        r"(?:\s-?\s*The Human Phenotype Ontology \(HPO\) has collected|$)", re.S)
_HPO_ITEM = re.compile(r"\s*(.+?)\s+(?:-\s|(\d+(?:\.\d+)?%|\d+/\d+)\s*|-$)")  # 90%, 7.5%, 5/7


def table_items(text: str) -> list[str]:
    """The rows of a flattened GARD symptom table, each with its frequency where the table gives one."""
    m = HPO_TABLE.search(text)
    if not m:
        return []
    # a table cut by the passage's end loses its last, possibly partial, row; a whole one ends its last row
    body = m.group(1).strip() + (" - " if m.group(0).endswith("has collected") else " ")
    return [f"{i.group(1)} ({i.group(2)})" if i.group(2) else i.group(1) for i in _HPO_ITEM.finditer(body)
            if len(i.group(1)) < 120]


def listed(lead: str, items: list[str]) -> str:
    shown = items[:10] + ([f"and {len(items) - 10} more"] if len(items) > 10 else [])
    return f"{lead.rstrip(': ')}: {'; '.join(shown)}."
