"""N-gram decontamination against evaluation sets (the released code,
github.com/microsoft/LMOps instruction_pretrain/, has no such step; we add it).

Texts are compared as normalized word sequences: lower case, words = runs of letters/digits (``\\w+``), so
punctuation and spacing never hide an overlap. An evaluation text contributes all its n-grams (13 by default,
as GPT-3 and most later reports use); an evaluation text shorter than n words contributes itself whole (if it
has at least ``min_words`` words), so short questions are caught too. A corpus text is contaminated when it
contains any of those word sequences.

N-grams are kept as 64-bit hashes of word hashes (a polynomial over the words), so an evaluation set costs
8 bytes per n-gram. Corpus texts are checked in batches: the windows of every length are hashed over a whole
batch of texts with a few numpy operations, a bit table on the low hash bits rules out almost all windows, and
the rest are looked up exactly. A hash collision could flag a clean text (chance about n-grams / 2**64 per
window); it can never hide a real overlap.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from megatron_ipt.formats.records import Collection
from megatron_ipt.io.inputs import InputError, Shard, iter_lines
from megatron_ipt.io.jsonl import LineError, parse_line

from .reader import expand_corpus_inputs
from .recipes import Inputs

DEFAULT_NGRAM = 13
DEFAULT_MIN_WORDS = 8
_WORD = re.compile(r"\w+")
_MULT = np.uint64(0x100000001B3)  # FNV prime: odd, so the polynomial keeps every word's contribution


def normalized_words(text: str) -> List[str]:
    return _WORD.findall(text.lower())


def _word_hashes(words: Sequence[str]) -> np.ndarray:
    # Python's str hash is salted per process; both sides are hashed in this process, so they agree.
    return np.fromiter((hash(w) for w in words), dtype=np.int64, count=len(words)).view(np.uint64)


def _window_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of every window of n consecutive words: sum of h[i+k] * MULT**(n-1-k) mod 2**64."""
    if len(hashes) < n:
        return np.empty(0, dtype=np.uint64)
    windows = len(hashes) - n + 1
    out = np.zeros(windows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            out = out * _MULT + hashes[k : k + windows]
    return out


@dataclass
class EvalNgrams:
    """The n-grams of the evaluation sets: ``sets[length]`` = sorted unique hashes of that many words."""

    n: int = DEFAULT_NGRAM
    min_words: int = DEFAULT_MIN_WORDS
    sets: Dict[int, np.ndarray] = field(default_factory=dict)
    texts: int = 0
    files: List[str] = field(default_factory=list)
    _filters: Dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def add_texts(self, texts: Iterable[str]):
        pending: Dict[int, List[np.ndarray]] = {}
        for text in texts:
            words = normalized_words(text)
            if len(words) < self.min_words:
                continue
            self.texts += 1
            length = min(len(words), self.n)
            pending.setdefault(length, []).append(_window_hashes(_word_hashes(words), length))
        for length, chunks in pending.items():
            old = self.sets.get(length, np.empty(0, dtype=np.uint64))
            self.sets[length] = known = np.unique(np.concatenate([old] + chunks))
            # A table of "some n-gram has these low bits", ~8 slots per n-gram (at most 64 MiB).
            size = 1 << int(min(26, max(16, np.ceil(np.log2(8 * len(known))))))
            bits = np.zeros(size, dtype=bool)
            bits[known & np.uint64(size - 1)] = True
            self._filters[length] = bits

    @property
    def ngrams(self) -> int:
        return sum(len(s) for s in self.sets.values())

    def match(self, text: str) -> Optional[str]:
        """The first overlapping word sequence of ``text`` (normalized), or None when it is clean."""
        return self.match_many([text])[0]

    def match_many(self, texts: Sequence[str], batch_words: int = 1 << 20) -> List[Optional[str]]:
        """``match`` for many texts at once: windows of every length are hashed over the words of a whole batch
        of texts (a window of length L is the window of length L-1 times MULT plus one word), and windows
        crossing from one text into the next are ignored."""
        out: List[Optional[str]] = [None] * len(texts)
        if not self.sets:
            return out
        start = 0
        while start < len(texts):
            words, stop, count = [], start, 0
            while stop < len(texts) and (stop == start or count < batch_words):
                words.append(normalized_words(texts[stop]))
                count += len(words[-1])
                stop += 1
            for i, hit in self._match_batch(words).items():
                out[start + i] = hit
            start = stop
        return out

    def _match_batch(self, words: List[List[str]]) -> Dict[int, str]:
        lengths = np.array([len(w) for w in words], dtype=np.int64)
        total = int(lengths.sum())
        if total == 0:
            return {}
        hashes = _word_hashes([w for ws in words for w in ws])
        owner = np.repeat(np.arange(len(words)), lengths)  # text of each word position
        ends = np.cumsum(lengths)[owner]  # where that text's words end
        found: Dict[int, str] = {}
        windows = np.zeros(total, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for length in range(1, max(self.sets) + 1):
                windows = windows[: total - length + 1] * _MULT + hashes[length - 1 :]
                known = self.sets.get(length)
                if known is None or not len(windows):
                    continue
                bits = self._filters[length]  # most windows are ruled out by one table lookup
                candidates = np.flatnonzero(bits[windows & np.uint64(len(bits) - 1)])
                candidates = candidates[candidates + length <= ends[candidates]]
                pos = np.searchsorted(known, windows[candidates])
                exact = (pos < len(known)) & (known[np.minimum(pos, len(known) - 1)] == windows[candidates])
                for p in candidates[exact]:
                    text = int(owner[p])
                    if text not in found:
                        first = p - (ends[p] - lengths[text])
                        found[text] = " ".join(words[text][first : first + length])
        return found


def _record_texts(record, keys: Optional[Sequence[str]]) -> List[str]:
    """The text of one JSONL record: the given keys (strings or lists of strings) joined by spaces, or with no
    keys every string value in it (nested lists/objects included)."""

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)

    if not isinstance(record, dict):
        raise LineError("not a JSON object")
    if keys is None:
        return [" ".join(strings(record))]
    missing = [k for k in keys if k not in record]
    if missing:
        raise LineError("missing key", ", ".join(map(repr, missing)))
    return [" ".join(s for k in keys for s in strings(record[k]))]


def load_eval_sets(
    specs: Sequence[str],
    keys: Optional[Sequence[str]] = None,
    n: int = DEFAULT_NGRAM,
    min_words: int = DEFAULT_MIN_WORDS,
) -> EvalNgrams:
    """Evaluation sets: JSONL files (``.jsonl``/``.json``/``.ndjson``, optionally compressed; one example per
    line, its text = ``keys`` joined, or every string in the record) or plain-text files (one example per
    non-empty line). A spec is a file, a glob or a directory."""
    ngrams = EvalNgrams(n=n, min_words=min_words)
    for spec in specs:
        for path in expand_corpus_inputs(spec, plain_text=True):
            ngrams.files.append(path)
            is_jsonl = ".jsonl" in path or ".json" in path or ".ndjson" in path
            texts = []
            for _, number, raw in iter_lines(Shard(path)):
                if not raw.strip():
                    continue
                if not is_jsonl:
                    texts.append(raw.decode("utf-8", errors="replace").strip())
                    continue
                try:
                    texts.extend(_record_texts(parse_line(raw), keys))
                except LineError as e:  # --skip-bad-lines does not apply: a partly read evaluation set leaks
                    raise InputError(path, number, f"evaluation set: {e}") from None
            ngrams.add_texts(texts)
    return ngrams


@dataclass
class DecontamReport:
    """Counts ("collections: pairs dropped", "raw texts: texts dropped", ...) and one record per flagged item."""

    counts: Counter = field(default_factory=Counter)
    flagged: List[dict] = field(default_factory=list)

    def flag(self, kind: str, where: str, what: str, match: str, dropped: bool):
        self.counts[f"{kind}: {what}s {'dropped' if dropped else 'flagged (kept)'}"] += 1
        self.flagged.append({"input": kind, "where": where, "what": what, "match": match, "dropped": dropped})


def _clean_entries(kind, where, entries, match, report, drop_texts) -> list:
    """New entries without contaminated pairs (and, with drop_texts, without contaminated contexts). A dropped
    entry breaks the chain there: the next entry no longer inherits from it."""
    out, broken = [], False
    for i, entry in enumerate(entries):
        at = f"{where} entry {i}"
        hit = match[entry.context]
        if hit:
            report.flag(kind, at, "text", hit, drop_texts)
            if drop_texts:
                broken = True
                continue
        pairs = []
        for j, qa in enumerate(entry.qa_list):
            pair_match = match[qa["Q"] + " " + qa["A"]]
            if pair_match:
                report.flag(kind, f"{at} pair {j}", "pair", pair_match, True)
            else:
                pairs.append(qa)
        out.append(replace(entry, qa_list=pairs, inherit_from_prev=entry.inherit_from_prev and not broken))
        broken = False
    return out


def decontaminate(inputs: Inputs, ngrams: EvalNgrams, drop_texts: bool = True) -> Tuple[Inputs, DecontamReport]:
    """Drop every pair (synthesized or tuning) and general instruction that shares an n-gram with an evaluation
    set; texts (collection contexts, raw texts, tuning contexts) that do are dropped too, or with
    ``drop_texts=False`` kept and only reported. The given inputs are not modified."""
    texts = {t for _, t in inputs.raw_texts} | {t for _, t in inputs.instructions}
    for entry in [e for _, chain in inputs.collections for e in chain] + [row for _, row in inputs.tuning]:
        texts.add(entry.context)
        texts.update(qa["Q"] + " " + qa["A"] for qa in entry.qa_list)
    texts = sorted(texts)
    match = dict(zip(texts, ngrams.match_many(texts)))
    report = DecontamReport()
    out = Inputs()
    for where, chain in inputs.collections:
        entries = _clean_entries("collections", where, chain, match, report, drop_texts)
        if entries:
            out.collections.append((where, Collection(entries)))
    for where, row in inputs.tuning:
        entries = _clean_entries("tuning data", where, [row], match, report, drop_texts)
        out.tuning += [(where, e) for e in entries]
    for where, text in inputs.raw_texts:
        if match[text]:
            report.flag("raw texts", where, "text", match[text], drop_texts)
        if not match[text] or not drop_texts:
            out.raw_texts.append((where, text))
    for where, text in inputs.instructions:
        if match[text]:
            report.flag("general instructions", where, "instruction", match[text], True)
        else:
            out.instructions.append((where, text))
    return out, report
