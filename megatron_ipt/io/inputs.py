"""Streaming input: file/glob/directory expansion, .gz/.zst decompression and byte-range shards. Nothing here
holds more than one line (plus I/O buffers) in memory.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

from megatron_ipt.errors import UserError

COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
JSONL_SUFFIXES = tuple(s + c for s in (".jsonl", ".json", ".ndjson") for c in ("",) + COMPRESSED_SUFFIXES)
_BUFFER = 1 << 20


class InputError(UserError):
    """A problem with the user's input, located to a file and line. `skippable`: --skip-bad-lines would have
    skipped and counted this line instead (the tools then say so)."""

    def __init__(self, path: str, line: Optional[int], problem: str, skippable: bool = False):
        self.path, self.line, self.problem, self.skippable = path, line, problem, skippable
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # keep the fields across process boundaries
        return InputError, (self.path, self.line, self.problem, self.skippable)


def expand_inputs(spec: str, dir_suffixes: Sequence[str] = JSONL_SUFFIXES, what: str = "JSONL files") -> List[str]:
    """A file, a glob (`data/*.jsonl.gz`, `**` allowed) or a directory (its files ending in `dir_suffixes`,
    recursively), sorted."""
    if os.path.isdir(spec):
        suffixes = tuple(dir_suffixes)
        found = [
            os.path.join(root, name) for root, _, names in os.walk(spec) for name in names if name.endswith(suffixes)
        ]
        if not found:
            raise InputError(spec, None, f"directory has no {what} (looked for {', '.join(suffixes)})")
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
    """Open for reading bytes, decompressing .gz/.zst(d) on the fly. A compressed file that is truncated or corrupt
    raises `InputError` naming it when the read reaches the damage (never a quietly shorter stream)."""
    if path.endswith(".gz"):
        return io.BufferedReader(_Checked(gzip.open(path, "rb"), path, "gzip"), buffer_size=_BUFFER)
    if path.endswith((".zst", ".zstd")):
        return io.BufferedReader(_Checked(_ZstdFrames(path), path, "zstd"), buffer_size=_BUFFER)
    return open(path, "rb", buffering=_BUFFER)


class _Checked(io.RawIOBase):
    """A decompressing stream whose library errors (EOFError, zlib.error, BadGzipFile, ZstdError) become one
    `InputError` naming the file, instead of a traceback from inside the reading thread or process."""

    def __init__(self, stream, path: str, codec: str):
        self._stream, self._path, self._codec = stream, path, codec

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            return self._stream.readinto(buffer)
        except InputError:
            raise
        except Exception as error:  # each codec raises its own kinds (EOFError, zlib.error, ZstdError, ...)
            if isinstance(error, OSError) and error.errno is not None:
                raise  # a real I/O error (disk, permissions): the tools report those themselves
            raise InputError(self._path, None, f"truncated or corrupt {self._codec} file ({error})") from None

    def close(self) -> None:
        self._stream.close()
        super().close()


class _ZstdFrames(io.RawIOBase):
    """Every frame of a .zst file, decompressed. zstandard's own stream reader ends quietly where a file ends
    inside a frame, which would drop the lines lost with no word; here that is an EOFError."""

    def __init__(self, path: str):
        import zstandard

        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False  # bytes of the current frame were fed and its end not seen yet
        self._raw = open(path, "rb")
        self._out, self._pos = b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._pos == len(self._out):
            chunk = self._raw.read(_BUFFER)
            if not chunk:
                if self._in_frame:
                    raise EOFError("the file ends inside a zstd frame")
                return 0
            self._out, self._pos = self._feed(chunk), 0
        n = min(len(buffer), len(self._out) - self._pos)
        buffer[:n] = self._out[self._pos : self._pos + n]
        self._pos += n
        return n

    def _feed(self, data: bytes) -> bytes:
        parts = []
        while data:
            self._in_frame = True
            parts.append(self._frame.decompress(data))
            data = b""
            if self._frame.eof:  # the frame ended: what follows starts the next one
                data = self._frame.unused_data
                self._frame, self._in_frame = self._decompressor.decompressobj(), False
        return b"".join(parts)

    def close(self) -> None:
        self._raw.close()
        super().close()


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


def iter_chunks(shard: Shard, size: int = 4 << 20) -> Iterator[Tuple[int, bool, memoryview]]:
    """The lines of `iter_lines(shard)`, whole lines at a time, for readers that split lines themselves (the packing
    stage's native JSONL scanner): (byte offset or -1 when compressed, whether the shard starts at the top of its
    file, so that a reader counting lines knows their numbers from 1 on, about `size` bytes of consecutive lines).
    Joined, the chunks are exactly the lines `iter_lines` yields. Chunks are views of what was read, not copies;
    a line cut by a read comes whole in a chunk of its own."""
    with open_binary(shard.path) as f:
        offset = 0
        if shard.start > 0:
            f.seek(shard.start - 1)
            offset = shard.start - 1 + len(f.readline())  # as iter_lines: that line began in the previous shard
        compressed = is_compressed(shard.path)
        rest = bytearray()  # the start of a line the last read cut
        for chunk in _whole_lines(f, size, rest):
            if shard.end is not None:
                if offset >= shard.end:
                    return
                if offset + len(chunk) > shard.end:
                    # keep the lines that start before the end: through the newline of the line holding byte end-1
                    tail = bytes(chunk[shard.end - offset - 1 :])
                    cut = tail.find(b"\n") + 1
                    if cut:
                        chunk = chunk[: shard.end - offset + cut - 1]
            yield (-1 if compressed else offset), shard.start == 0, chunk
            offset += len(chunk)


def _whole_lines(f, size: int, rest: bytearray) -> Iterator[memoryview]:
    while True:
        data = f.read(size)
        if not data:
            if rest:
                yield memoryview(bytes(rest))  # the last line, without a newline
            return
        view, begin = memoryview(data), 0
        if rest:
            first = data.find(b"\n") + 1
            if not first:
                rest += data
                continue
            rest += view[:first]
            yield memoryview(bytes(rest))
            rest.clear()
            begin = first
        cut = data.rfind(b"\n") + 1
        if cut > begin:
            yield view[begin:cut]
            begin = cut
        rest += view[begin:]


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
