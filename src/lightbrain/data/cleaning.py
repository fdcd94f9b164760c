"""Cleaning: one whitespace normalisation for every source, and exact-duplicate removal."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightbrain.data.sources import Document

_SPACES = re.compile(r"[^\S\n]+")  # runs of whitespace other than newlines
_BLANK_LINES = re.compile(r"\n{3,}")


def normalise_whitespace(text: str) -> str:
    """Collapse runs of spaces/tabs to one space, trim every line, keep at most one blank line in a row.
    Line breaks stay: dialogue turns and paragraphs carry meaning."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def drop_duplicates(documents: list["Document"], seen: set[str]) -> list["Document"]:
    """The documents whose text is not in `seen` (and not repeated within `documents`), first kept;
    `seen` is updated, so calling this source by source removes duplicates across sources too."""
    unique = []
    for doc in documents:
        if doc.text not in seen:
            seen.add(doc.text)
            unique.append(doc)
    return unique
