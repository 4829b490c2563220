"""Citation markers ([1], [2, 3]) in answer text: find them, strip them."""

from __future__ import annotations

import re

MARKER_GROUP = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")
"""A citation group: [1], [1, 2], [1; 3]. Shared with the prompt's citation extraction."""


def markers_in(text: str) -> list[int]:
    """Marker numbers in text, in order of first appearance."""
    out: list[int] = []
    for group in MARKER_GROUP.finditer(text):
        for num in re.split(r"\s*[,;]\s*", group.group(1)):
            if int(num) not in out:
                out.append(int(num))
    return out


def strip_markers(text: str) -> str:
    return re.sub(r"\s+([.,;:!?])", r"\1", MARKER_GROUP.sub("", text)).strip()
