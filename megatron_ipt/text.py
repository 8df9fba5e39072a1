"""Plain-text helpers shared by stages that read prose (the rules miner, the evaluation task builder)."""

from __future__ import annotations

import re
from typing import List

# A sentence ends at . ! or ? followed by white space and a capital, a quote or an opening parenthesis.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def sentences(text: str) -> List[str]:
    """The sentences of `text` with at least 5 words, white space collapsed."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if len(s.split()) >= 5]
