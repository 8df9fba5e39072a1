"""A shard's output directory: ``{out}/shard{S:05d}-part{P:05d}.jsonl`` parts and ``manifest-shard{S:05d}.json``,
the one module that writes them (their format, and the reader other stages use: megatron_ipt/formats/synthesis_output.py).

The manifest records the layout (input content hash, settings, parts, each with the hash of the input up to its
last text) and is rewritten as parts start and finish. A resumed run skips the finished parts and refuses a
changed input (checked part by part as it is streamed) or changed settings, so a killed run continues without
duplicating or losing texts.

A part is written in two steps: its record goes into the manifest as ``pending`` (with the sha256 of the
content), then the file is renamed in, then the record becomes the part's own. Whichever step a kill interrupts,
the file on disk matches either the pending record or the previous one (``Manifest.record``).
"""

import hashlib
import json
import os
from collections import Counter

from megatron_ipt.errors import ConfigError, OutputError
from megatron_ipt.formats.synthesis_output import manifest_name, part_name, part_pattern, read_manifest
from megatron_ipt.io.atomic import write_atomic
from megatron_ipt.io.inputs import open_binary

# The layout keys known only once the whole input is read (None until then).
FROM_INPUT = ("input_sha256", "records", "texts")


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def check_output_dir(path):
    """Raise OutputError naming ``path`` when the run could not write there, before any work (a model load, the
    input read). An existing directory gets a probe file written and removed (catches read-only mounts and
    permissions alike); a missing one needs its nearest existing ancestor to be a writable directory."""
    if os.path.isdir(path):
        probe = os.path.join(path, f".synthesize-write-check-{os.getpid()}")
        try:
            write_atomic(probe, "")
            os.remove(probe)
        except OSError as e:
            raise OutputError(f"--output-dir {path}: cannot write there ({_reason(e)})") from None
        return
    if os.path.lexists(path):
        raise OutputError(f"--output-dir {path}: exists and is not a directory")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"--output-dir {path}: cannot create it, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"--output-dir {path}: cannot create it, {parent} is not writable")


def _write(path, content, what):
    """``write_atomic`` with a failure (disk full, read-only, quota) told as one line naming the path."""
    try:
        write_atomic(path, content)
    except OSError as e:
        raise OutputError(
            f"{path}: cannot write {what} ({_reason(e)}); it is not taken as written: make room and rerun with --resume"
        ) from None


def hash_input(files):
    """The sha256 ``runner.ShardStream`` computes for the whole input, read in blocks (no parsing): for manifests
    of a version that recorded only the whole input's hash, checked before a resumed run skips anything."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(b"\0file\0")
        with open_binary(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _sha256(lines):
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_of(part, path):
    """What the manifest knows of the existing part file ``path``: ``{"stats", "failed", "sha256"}``, or None
    when no record describes the file's content (the run was killed after writing the file and before the
    manifest said so; the part is then made again, so the counts stay exact)."""
    if not part:
        return None
    pending = part.get("pending")
    if "sha256" not in part and not pending:  # a manifest of a version without checksums: trust it as it was
        return {"stats": part.get("stats", {}), "failed": []} if part.get("done") else None
    digest = _sha256_file(path)
    if pending and pending.get("sha256") == digest:
        return dict(pending)
    if part.get("done") and part.get("sha256") == digest:
        return {k: part[k] for k in ("stats", "failed", "sha256") if k in part}
    return None


class Manifest:
    """The manifest of shard ``shard_index`` in ``output_dir`` and its parts (``parts``: one dict each, as
    written), opened for a run with ``layout`` (everything that must not change on resume; the FROM_INPUT keys
    None until the input is read). Opening checks what the run may do there: a resumed run the earlier
    manifest's settings and (for a manifest of an earlier version) its whole input hash ``input_files``; a new
    run that no part of an earlier run is there (FileExistsError). A part's bookkeeping goes through ``part``,
    ``record``, ``keep``, ``forget`` and ``write``; ``finish`` checks and records the whole input."""

    def __init__(self, output_dir, shard_index, layout, resume, input_files):
        self.dir, self.shard_index, self.resume = output_dir, shard_index, resume
        self.path = os.path.join(output_dir, manifest_name(shard_index))
        self.layout = dict(layout)
        old = {}
        if os.path.exists(self.path):
            old = read_manifest(self.path)
            if resume:
                self._check_resumable(old, input_files)
        if not resume and os.path.isdir(output_dir):
            mine = part_pattern(shard_index)
            existing = sorted(f for f in os.listdir(output_dir) if mine.fullmatch(f))
            if existing:
                raise FileExistsError(
                    f"{os.path.join(output_dir, existing[0])} exists; pass --resume to continue a run"
                )
        try:
            os.makedirs(output_dir, exist_ok=True)
        except OSError as e:
            raise OutputError(f"--output-dir {output_dir}: cannot create it ({_reason(e)})") from None
        # On resume, every record of the earlier run is kept until its part is looked at: a kill must not lose one.
        self.parts = [dict(q) for q in old.get("parts", [])] if resume else []
        if not (resume and old):  # a resumed run keeps the earlier manifest until it has something to add
            self.save()
        texts = self.layout["texts"]  # known on resume
        self.expected_parts = -(-texts // layout["part_size"]) if texts is not None else None

    def _check_resumable(self, old, input_files):
        diff = {k: (old.get(k), v) for k, v in self.layout.items() if k not in FROM_INPUT and old.get(k) != v}
        if diff:
            raise ConfigError(f"{self.path}: --resume with different input or settings; (old, new): {diff}")
        if old.get("input_sha256") and any("input_sha256" not in q for q in old.get("parts", [])):
            whole = hash_input(input_files)  # an earlier version's manifest: only the whole input is known
            if whole != old["input_sha256"]:
                raise self.changed({"input_sha256": (old["input_sha256"], whole)})
        self.layout.update({k: old.get(k) for k in FROM_INPUT})

    def changed(self, diff):
        return ConfigError(
            f"{self.path}: --resume with different input or settings (the input changed); (old, new): {diff}"
        )

    def save(self, complete=False):
        manifest = dict(self.layout, parts=self.parts, complete=complete)
        _write(self.path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "the manifest")

    def part(self, p, texts, read):
        """Part ``p`` of ``texts`` texts, made of the input up to hash ``read``: an earlier run's record (checked
        against the input), or a new one, saved before anything is made of it."""
        if self.expected_parts is not None and p >= self.expected_parts:  # the earlier run had fewer texts
            raise self.changed({"texts": (self.layout["texts"], f"more than {p * self.layout['part_size']}")})
        if p < len(self.parts):
            part = self.parts[p]
            if part.get("input_sha256", read) != read:
                raise self.changed({f"input_sha256 up to part {p}": (part["input_sha256"], read)})
        else:
            part = {}
            self.parts.append(part)
        fresh = "file" not in part
        part.update(file=part_name(self.shard_index, p), texts=texts, input_sha256=read)
        if fresh:
            self.save()  # the part is known from here on, with the input it is made of
        return part

    def file(self, part):
        return os.path.join(self.dir, part["file"])

    def record(self, part):
        """The record describing the part's file on disk (see ``_record_of``), or None (no file, or none fits)."""
        path = self.file(part)
        return _record_of(part, path) if os.path.exists(path) else None

    def keep(self, part, record):
        """The part's file is done as ``record`` says."""
        part.update(record, done=True)
        part.pop("pending", None)

    def forget(self, part):
        """The part is made from scratch: whatever an earlier run recorded does not describe it."""
        for key in ("done", "stats", "failed", "sha256", "pending"):
            part.pop(key, None)

    def write(self, part, lines, stats, failed):
        """Write the part's ``lines`` (pending record, file, own record; see the module doc)."""
        written = {"stats": dict(stats), "failed": failed, "sha256": _sha256(lines)}
        part["pending"] = written
        self.save()
        _write(self.file(part), lines, "a part")
        del part["pending"]
        part.update(written, done=True)
        self.save()

    def finish(self, input_sha256, records, texts):
        """Record the whole input (``records`` in the shard, ``texts`` after splitting); a resumed run refuses an
        input other than its earlier run's, or parts of an earlier run beyond the input's end."""
        made = -(-texts // self.layout["part_size"])  # the parts this input has
        new = {"input_sha256": input_sha256, "records": records, "texts": texts}
        diff = {k: (self.layout[k], v) for k, v in new.items() if self.layout[k] not in (None, v)}
        if len(self.parts) > made:  # an earlier run (killed before it read all the input) had parts beyond its end
            diff["parts"] = (len(self.parts), made)
        if self.resume and diff:
            raise self.changed(diff)
        self.layout.update(new)
        self.save(all(part.get("done") for part in self.parts) and len(self.parts) == made)
        return made

    def written(self):
        """The counts of the parts written (``stats`` summed, with ``texts`` and ``parts``)."""
        files = Counter()
        for part in self.parts:
            if part.get("done"):
                files.update(part.get("stats", {}), texts=part["texts"], parts=1)
        return files
