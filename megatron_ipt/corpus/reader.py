"""Reading the corpus builder's inputs, with file:line errors (or counted skips with --skip-bad-lines).

- collections (tools/synthesize.py output): one JSON list per line, a chain of entries
  ``{"context": str, "QA_list": [{"Q": str, "A": str}], "inherit_from_prev": bool (default false)}``;
  other keys (followed_by_next, id, source, ...) are ignored;
- synthesizer tuning data: one entry object per line, ``{"context", "QA_list"}`` (QA_type, rc_name ignored);
- raw texts: JSONL with a string field (``--text-key``);
- general instructions: JSONL with a question and a response field, rendered ``"{question} {response}"``.

A directory input means its JSONL files (recursively), so a synthesis output directory can be given as is
(its ``manifest-*.json`` files are not collections).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, List, Sequence, Tuple

import orjson

from megatron_ipt.data.jsonl import InputError, LineError, Shard, _parse_slowly, expand_inputs, iter_lines

JSONL_DIR_SUFFIXES = tuple(s + c for s in (".jsonl", ".ndjson") for c in ("", ".gz", ".zst", ".zstd"))
TEXT_DIR_SUFFIXES = (".txt", ".json", ".json.gz")
MAX_LISTED_SKIPS = 10


def expand_corpus_inputs(spec: str, plain_text: bool = False) -> List[str]:
    """A file, a glob, or a directory (its JSONL files; with ``plain_text`` also .txt and .json files)."""
    if os.path.isdir(spec):
        suffixes = JSONL_DIR_SUFFIXES + (TEXT_DIR_SUFFIXES if plain_text else ())
        found = sorted(
            os.path.join(root, name) for root, _, names in os.walk(spec) for name in names if name.endswith(suffixes)
        )
        if not found:
            raise InputError(spec, None, f"directory has no input files (looked for {', '.join(suffixes)})")
        return found
    return expand_inputs(spec)


@dataclass
class BadLines:
    """Stops at the first bad line, or (``skip``) counts bad lines by kind and keeps the first few."""

    skip: bool = False
    counts: Counter = field(default_factory=Counter)
    examples: List[str] = field(default_factory=list)

    def handle(self, path: str, line: int, error: LineError):
        if not self.skip:
            raise InputError(path, line, str(error))
        self.counts[error.kind] += 1
        if len(self.examples) < MAX_LISTED_SKIPS:
            self.examples.append(f"{path}:{line}: {error}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def iter_records(spec: str, bad: BadLines, check) -> Iterator[Tuple[str, object]]:
    """``("path:line", check(record))`` for every non-blank line; ``check`` raises LineError on a bad record."""
    for path in expand_corpus_inputs(spec):
        for _, number, raw in iter_lines(Shard(path)):
            if not raw.strip():
                continue
            try:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    record = _parse_slowly(raw)  # says precisely what is wrong, or accepts what json accepts
                if b"\\ud" in raw or b"\\uD" in raw:  # JSON escapes can smuggle in lone surrogates
                    _check_unicode(record)
                value = check(record)
            except LineError as e:
                bad.handle(path, number, e)
                continue
            yield f"{path}:{number}", value


def _check_unicode(value):
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise LineError("invalid Unicode", f"a lone surrogate U+{ord(value[e.start]):04X}") from None
    elif isinstance(value, list):
        for v in value:
            _check_unicode(v)
    elif isinstance(value, dict):
        for v in value.values():
            _check_unicode(v)


def _type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def check_entry(entry, where: str = "") -> dict:
    """An entry ``{"context", "QA_list", ...}``; raises LineError naming the bad field."""
    at = f"{where}: " if where else ""
    if not isinstance(entry, dict):
        raise LineError("bad entry", f"{at}expected an object, got {_type(entry)}")
    if not isinstance(entry.get("context"), str):
        raise LineError("bad entry", f"{at}'context' must be a string, got {_type(entry.get('context'))}")
    qa_list = entry.get("QA_list")
    if not isinstance(qa_list, list):
        raise LineError("bad entry", f"{at}'QA_list' must be a list, got {_type(qa_list)}")
    for j, qa in enumerate(qa_list):
        if not (isinstance(qa, dict) and isinstance(qa.get("Q"), str) and isinstance(qa.get("A"), str)):
            raise LineError("bad pair", f"{at}QA_list[{j}] must be an object with string 'Q' and 'A', got {qa!r:.80}")
    if not isinstance(entry.get("inherit_from_prev", False), bool):
        raise LineError("bad entry", f"{at}'inherit_from_prev' must be true or false")
    return entry


def check_collection(record) -> list:
    if not isinstance(record, list) or not record:
        raise LineError(
            "not a collection",
            f"expected a non-empty JSON list of entries, got {_type(record)}"
            + (" (tuning-data rows go to --tuning-data)" if isinstance(record, dict) else ""),
        )
    for i, entry in enumerate(record):
        check_entry(entry, f"entry {i}")
    return record


def read_collections(spec: str, bad: BadLines) -> List[Tuple[str, list]]:
    return list(iter_records(spec, bad, check_collection))


def read_tuning(spec: str, bad: BadLines) -> List[Tuple[str, dict]]:
    return list(iter_records(spec, bad, check_entry))


def read_texts(spec: str, key: str, bad: BadLines) -> List[Tuple[str, str]]:
    def check(record):
        if not isinstance(record, dict):
            raise LineError("not a JSON object", f"got {_type(record)}")
        if key not in record:
            raise LineError("missing key", repr(key))
        if not isinstance(record[key], str):
            raise LineError("not a string", f"key {key!r} is {_type(record[key])}")
        return record[key]

    return list(iter_records(spec, bad, check))


def read_instructions(spec: str, keys: Sequence[str], bad: BadLines) -> List[Tuple[str, str]]:
    """General instructions as ``"{question} {response}"`` (one space, no chat template; reference §6.2)."""
    question_key, response_key = keys

    def check(record):
        if not isinstance(record, dict):
            raise LineError("not a JSON object", f"got {_type(record)}")
        for key in keys:
            if key not in record:
                raise LineError("missing key", repr(key))
            if not isinstance(record[key], str):
                raise LineError("not a string", f"key {key!r} is {_type(record[key])}")
        if not record[response_key].strip():
            raise LineError("empty response", repr(response_key))
        return f"{record[question_key]} {record[response_key]}"

    return list(iter_records(spec, bad, check))
