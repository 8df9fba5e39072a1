"""Reading the corpus builder's inputs, with file:line errors (or counted skips with --skip-bad-lines).

- collections (tools/synthesize.py output): one `Collection` per line (megatron_ipt/formats/records.py);
- synthesizer tuning data: one `Entry` per line, ``{"context", "QA_list"}`` (QA_type, rc_name carried along);
- raw texts: JSONL with a string field (``--text-key``);
- general instructions: JSONL with a question and a response field, rendered ``"{question} {response}"``.

A directory input means its JSONL files (recursively), so a synthesis output directory can be given as is
(its ``manifest-*.json`` files are not collections). Its manifests say whether the synthesis finished
(``unfinished_synthesis``): the builder refuses a run with parts not finished unless asked for what is there.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from megatron_ipt.errors import ConfigError
from megatron_ipt.formats import synthesis_output
from megatron_ipt.formats.records import Collection, Entry
from megatron_ipt.io.inputs import COMPRESSED_SUFFIXES, expand_inputs
from megatron_ipt.io.jsonl import BadLines, LineError, json_type, read_jsonl, string_field

JSONL_DIR_SUFFIXES = tuple(s + c for s in (".jsonl", ".ndjson") for c in ("",) + COMPRESSED_SUFFIXES)
TEXT_DIR_SUFFIXES = (".txt", ".json", ".json.gz")


def expand_corpus_inputs(spec: str, plain_text: bool = False) -> List[str]:
    """A file, a glob, or a directory (its JSONL files; with ``plain_text`` also .txt and .json files)."""
    return expand_inputs(spec, JSONL_DIR_SUFFIXES + (TEXT_DIR_SUFFIXES if plain_text else ()), "input files")


def iter_records(spec: str, bad: BadLines, check: Callable) -> Iterator[Tuple[str, object]]:
    """``("path:line", check(record))`` for every non-blank line; ``check`` raises LineError on a bad record."""
    for path in expand_corpus_inputs(spec):
        for number, value in read_jsonl(path, bad, check):
            yield f"{path}:{number}", value


def _object(record) -> dict:
    if not isinstance(record, dict):
        raise LineError("not a JSON object", f"got {json_type(record)}")
    return record


def read_collections(spec: str, bad: BadLines) -> List[Tuple[str, Collection]]:
    return list(iter_records(spec, bad, Collection.from_json))


def read_tuning(spec: str, bad: BadLines) -> List[Tuple[str, Entry]]:
    return list(iter_records(spec, bad, Entry.from_json))


def read_texts(spec: str, key: str, bad: BadLines) -> List[Tuple[str, str]]:
    return list(iter_records(spec, bad, lambda record: string_field(_object(record), key)))


def read_instructions(spec: str, keys: Sequence[str], bad: BadLines) -> List[Tuple[str, str]]:
    """General instructions as ``"{question} {response}"``: one space, no chat template (the released domain
    models' card, instruction-pretrain/finance-Llama3-8B, FAQ; microsoft/LMOps issue #257)."""

    def check(record):
        question, response = (string_field(_object(record), key) for key in keys)
        if not response.strip():
            raise LineError("empty response", repr(keys[1]))
        return f"{question} {response}"

    return list(iter_records(spec, bad, check))


ALLOW_INCOMPLETE = "--allow-incomplete-synthesis"


def unfinished_synthesis(spec: str, allow: bool = False) -> Optional[dict]:
    """What the synthesis runs below the directory ``spec`` (their manifests) have not finished: None when every
    shard of every run is finished (or ``spec`` is no directory, or holds no manifest). Otherwise a ValueError of
    one line naming the directory, each unfinished shard and its parts, and how to go on; with ``allow``, the
    missing parts and texts as a dict (``texts_missing`` None where a shard's count is not known yet)."""
    if not spec or not os.path.isdir(spec):
        return None
    shards = [s for s in synthesis_output.progress(spec) if not s.finished]
    if not shards:
        return None
    by_dir = {}
    for s in shards:
        by_dir.setdefault(s.directory, []).append(s.describe())
    detail = "; ".join(f"{d}: " + "; ".join(lines) for d, lines in by_dir.items())
    if not allow:
        raise ConfigError(
            f"--collections {spec}: the synthesis is not finished: {detail}; rerun tools/synthesize.py with --resume "
            f"(same flags) to finish it, or pass {ALLOW_INCOMPLETE} to build from the parts that are there"
        )
    known = [s.texts_missing for s in shards]
    return {
        "shards": len(shards),
        "parts_missing": sum(len(s.missing) for s in shards if s.parts is not None),
        "parts_count_known": all(s.parts is not None for s in shards),
        "texts_missing": None if None in known else sum(known),
        "detail": detail,
    }
