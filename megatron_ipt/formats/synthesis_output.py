"""The on-disk format of a synthesis output directory (tools/synthesize.py ``--output-dir``), shared by its writer
(megatron_ipt/synthesis/manifest.py) and its readers (the corpus builder), which import only this layer.

- ``shard{S:05d}-part{P:05d}.jsonl``: part P of shard S, one ``Collection`` per line (formats/records.py);
- ``manifest-shard{S:05d}.json``: the shard's layout (``input``, ``num_shards``, ``shard_index``, ``part_size``,
  ``texts``: the shard's texts after splitting, null until the run has read its whole input, and the other
  settings), ``parts`` (one record per part started: ``file``, ``texts``, ``done``: true once the part's file
  and counts are in) and ``complete`` (true once every part of the whole input is done).

``progress(directory)`` reads the manifests below a directory and says which parts are not finished.
"""

import json
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional

from megatron_ipt.errors import ConfigError

MANIFEST = re.compile(r"manifest-shard(\d{5})\.json")


def manifest_name(shard_index: int) -> str:
    return f"manifest-shard{shard_index:05d}.json"


def part_name(shard_index: int, part: int) -> str:
    return f"shard{shard_index:05d}-part{part:05d}.jsonl"


def part_pattern(shard_index: int):
    """The names of shard ``shard_index``'s part files."""
    return re.compile(rf"shard{shard_index:05d}-part\d+\.jsonl")


def read_manifest(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except ValueError as e:  # a damaged manifest: the message as json gives it
            raise ConfigError(str(e)) from e


def _ranges(numbers: List[int]) -> str:
    """[3, 4, 5, 9] -> "3-5, 9"."""
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(out)


@dataclass
class ShardProgress:
    """One shard of a synthesis run: its parts (``parts``: None while the run has not read its whole input) and
    those not finished (``missing``; with ``parts`` None, also every part after ``started``)."""

    directory: str
    shard_index: int
    parts: Optional[int]
    started: int  # parts the manifest has a record of
    missing: List[int] = field(default_factory=list)
    texts: Optional[int] = None  # the shard's texts (None: not known yet)
    texts_done: int = 0

    @property
    def finished(self) -> bool:
        return self.parts is not None and not self.missing

    @property
    def texts_missing(self) -> Optional[int]:
        return None if self.texts is None else self.texts - self.texts_done

    def describe(self) -> str:
        """e.g. "shard 0: parts 3-29 of 30 not finished"."""
        if self.parts is None:
            missing, later = list(self.missing), self.started  # every part from `later` on is missing
            while missing and missing[-1] == later - 1:
                later = missing.pop()
            listed = f"{_ranges(missing)}, " if missing else ""
            return (
                f"shard {self.shard_index}: parts {listed}{later} and later not finished (the run stopped before it "
                "had read its whole input, so the number of parts is not known)"
            )
        return f"shard {self.shard_index}: parts {_ranges(self.missing)} of {self.parts} not finished"


def progress(directory: str) -> List[ShardProgress]:
    """Every started shard of every synthesis run below ``directory`` (its manifests, searched recursively),
    finished or not, by directory and shard. A shard without a manifest is not listed: synthesizing some shards of
    the input on purpose is how the paper's share is made (``--num-shards 5 --shard-index 0`` converts 1/5 of the
    texts, the rest stays raw), so only a shard that started and did not finish is known to be incomplete."""
    runs = {}
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            m = MANIFEST.fullmatch(name)
            if m:
                runs.setdefault(root, {})[int(m.group(1))] = read_manifest(os.path.join(root, name))
    out = []
    for root in sorted(runs):
        manifests = runs[root]
        for s in sorted(manifests):
            m = manifests[s]
            records, texts = m.get("parts", []), m.get("texts")
            parts = -(-texts // m["part_size"]) if isinstance(texts, int) and m.get("part_size") else None
            done = [bool(r.get("done")) for r in records]
            known = len(records) if parts is None else parts
            missing = [p for p in range(known) if p >= len(done) or not done[p]]
            texts_done = sum(r.get("texts", 0) for r in records if r.get("done"))
            out.append(ShardProgress(root, s, parts, len(records), missing, texts, texts_done))
    return out
