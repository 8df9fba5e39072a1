"""Small files written atomically: a temporary name next to the target, flushed to disk, then renamed, so a reader
(or a resumed run) sees either the old file or the complete new one, never a half-written file."""

from __future__ import annotations

import json
import os
from typing import Iterable, Union


def write_atomic(path: str, content: Union[str, Iterable[str]]) -> str:
    """Write `content` (a string, or strings written one after another) to `path` atomically; returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        if isinstance(content, str):
            f.write(content)
        else:
            f.writelines(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str, data, indent: int = 1) -> str:
    return write_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str, records: Iterable) -> str:
    return write_atomic(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))
