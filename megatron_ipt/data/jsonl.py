"""Streaming JSONL input: file/glob/directory expansion, .gz/.zst decompression, byte-range shards, and
line-exact error reporting. Nothing here holds more than one line (plus I/O buffers) in memory.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import orjson

COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
JSONL_SUFFIXES = tuple(s + c for s in (".jsonl", ".json", ".ndjson") for c in ("",) + COMPRESSED_SUFFIXES)
_BUFFER = 1 << 20


# What the tools print after a located input error when lines were not being skipped.
SKIP_BAD_LINES_HINT = "(nothing was written; pass --skip-bad-lines to skip and count such lines instead)"


class InputError(Exception):
    """A problem with the user's input, located to a file and line."""

    def __init__(self, path: str, line: Optional[int], problem: str):
        self.path, self.line, self.problem = path, line, problem
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keep the fields across process boundaries
        return InputError, (self.path, self.line, self.problem)


def expand_inputs(spec: str) -> List[str]:
    """A file, a glob (`data/*.jsonl.gz`, `**` allowed) or a directory (its JSONL files, recursively), sorted."""
    if os.path.isdir(spec):
        found = [
            os.path.join(root, name)
            for root, _, names in os.walk(spec)
            for name in names
            if name.endswith(JSONL_SUFFIXES)
        ]
        if not found:
            raise InputError(spec, None, f"directory has no JSONL files (looked for {', '.join(JSONL_SUFFIXES)})")
        return sorted(found)
    if glob.has_magic(spec):
        found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not found:
            raise InputError(spec, None, "glob matches no files")
        return found
    if not os.path.isfile(spec):
        raise InputError(spec, None, "no such file or directory")
    return [spec]


def is_compressed(path: str) -> bool:
    return path.endswith(COMPRESSED_SUFFIXES)


def open_binary(path: str) -> io.BufferedIOBase:
    """Open for reading bytes, decompressing .gz/.zst(d) on the fly."""
    if path.endswith(".gz"):
        return io.BufferedReader(gzip.open(path, "rb"), buffer_size=_BUFFER)
    if path.endswith((".zst", ".zstd")):
        import zstandard

        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), buffer_size=_BUFFER)
    return open(path, "rb", buffering=_BUFFER)


@dataclass(frozen=True)
class Shard:
    """The lines of `path` that start in bytes [start, end); end None = to the end (compressed files are whole)."""

    path: str
    start: int = 0
    end: Optional[int] = None

    @property
    def label(self) -> str:
        return self.path if self.start == 0 and self.end is None else f"{self.path}[{self.start}:{self.end}]"


def plan_shards(paths: List[str], target_bytes: int) -> List[Shard]:
    """Split plain files into byte ranges of about `target_bytes`; compressed files stay whole (no seeking)."""
    shards = []
    for path in paths:
        size = os.path.getsize(path)
        if is_compressed(path) or size <= target_bytes:
            shards.append(Shard(path))
            continue
        starts = list(range(0, size, target_bytes))
        for i, start in enumerate(starts):
            shards.append(Shard(path, start, starts[i + 1] if i + 1 < len(starts) else None))
    return shards


def iter_lines(shard: Shard) -> Iterator[Tuple[int, Optional[int], bytes]]:
    """Yield (byte offset or -1 when compressed, line number if known, raw line) for each line of the shard.

    A line belongs to the shard its first byte falls in, so adjacent shards never share or drop a line.
    Line numbers are known when the shard starts at the top of its file; otherwise `line_number_at`
    computes one on demand (only needed to report an error).
    """
    with open_binary(shard.path) as f:
        offset, number = 0, 1
        if shard.start > 0:
            f.seek(shard.start - 1)
            offset = shard.start - 1 + len(f.readline())  # skip the line that began in the previous shard
            number = None
        compressed = is_compressed(shard.path)
        for raw in f:
            if shard.end is not None and offset >= shard.end:
                return
            yield (-1 if compressed else offset), number, raw
            offset += len(raw)
            if number is not None:
                number += 1


def line_number_at(path: str, offset: int) -> int:
    """1-based number of the line starting at byte `offset` of a plain file (counts newlines before it)."""
    count, done = 0, 0
    with open(path, "rb", buffering=0) as f:
        while done < offset:
            chunk = f.read(min(_BUFFER, offset - done))
            if not chunk:
                break
            count += chunk.count(b"\n")
            done += len(chunk)
    return count + 1


class LineError(ValueError):
    """Why one line is unusable; `kind` groups skipped lines in the summary."""

    def __init__(self, kind: str, detail: str):
        self.kind = kind
        super().__init__(f"{kind}: {detail}" if detail else kind)


def parse_line(raw: bytes, keys: List[str]) -> List[object]:
    """The values of `keys` in one JSONL line; raises LineError naming the problem.

    orjson parses the common case (several times faster than `json`); anything it rejects is parsed again by
    the standard library, which either accepts it (so the accepted syntax is exactly `json`'s) or says
    precisely what is wrong.
    """
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        record = _parse_slowly(raw)
    if not isinstance(record, dict):
        raise LineError("not a JSON object", f"got {_json_type(record)}")
    return _values(record, raw, keys)


def _parse_slowly(raw: bytes):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LineError("invalid UTF-8", f"byte {e.start} of the line") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise LineError("malformed JSON", f"{e.msg} (column {e.colno})") from None
    return record


def _values(record: dict, raw: bytes, keys: List[str]) -> List[object]:
    values = []
    for key in keys:
        if key not in record:
            raise LineError("missing key", repr(key))
        value = record[key]
        if isinstance(value, str):
            values.append(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            values.append(value)  # pre-split sentences, as Megatron accepts
        else:
            raise LineError(
                "not a string", f"key {key!r} is {_json_type(value)}, expected a string (or a list of strings)"
            )
    # JSON escapes can smuggle in lone surrogates ("\ud800"), which are not text and no tokenizer takes.
    # The byte search keeps the check off the common path.
    if b"\\ud" in raw or b"\\uD" in raw:
        for key, value in zip(keys, values):
            for s in [value] if isinstance(value, str) else value:
                try:
                    s.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise LineError(
                        "invalid Unicode", f"key {key!r} has a lone surrogate U+{ord(s[e.start]):04X}"
                    ) from None
    return values


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "a list with non-string items"
    return "an object" if isinstance(value, dict) else type(value).__name__
