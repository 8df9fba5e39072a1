"""Sharded, resumable synthesis driver.

Input records (JSONL, in input order; blank lines ignored) are dealt to ``num_shards`` shards round-robin: the
i-th record goes to shard ``i % num_shards``, so a Slurm array task reads the input once, as a stream, and keeps
only the part it is making (``ShardStream``). Each record's text is split into pieces that fit one prompt
(``rounds.split_long_text``); the shard's pieces are processed in parts of ``part_size``, each part going
through all M rounds and written as
``{out}/shard{S:05d}-part{P:05d}.jsonl`` (one ``Collection`` per line, megatron_ipt/formats/records.py) via temp
file + rename.
Every entry also carries the input record's ``carry_keys`` (default ``id``, ``source``) and, for a split
text, ``piece``/``pieces``.

``manifest-shard{S:05d}.json`` records the layout (input content hash, settings, parts, each with the hash of the
input up to its last text) and is rewritten as parts start and finish; ``resume`` skips finished parts and
refuses a changed input (checked part by part as it is streamed) or changed settings, so a killed run continues
without duplicating or losing texts.
"""

import hashlib
import itertools
import json
import os
import re
import sys
import threading
import time
from collections import Counter

from megatron_ipt.formats.wire import pair_type
from megatron_ipt.io.atomic import write_atomic
from megatron_ipt.io.inputs import Shard, expand_inputs, iter_lines, open_binary
from megatron_ipt.io.jsonl import BadLines, LineError, json_type, parse_line, string_field

from .rounds import entry_sources, split_long_text, synthesize_part


class ShardStream:
    """This shard's texts, streamed from the input: ``take(n)`` returns the next n (text, extra) pieces, so only
    the part being made is in memory, never the shard.

    Every line of the input is read (record i goes to shard ``i % num_shards``, and only parsing tells a record
    from a blank or bad line) and hashed as it goes: ``sha256()`` is the hash of the input read so far, the whole
    input's (the same value as before streaming) once ``exhausted``. A bad line raises InputError(file, line,
    problem) when the stream reaches it, or with ``skip_bad_lines`` is counted by kind."""

    def __init__(
        self,
        spec,
        split,
        text_key="text",
        carry_keys=("id", "source"),
        num_shards=1,
        shard_index=0,
        skip_bad_lines=False,
    ):
        self.files = expand_inputs(spec)
        self.digest = hashlib.sha256()
        self.bad = BadLines(skip=skip_bad_lines)
        self.records = self.blank = self.in_shard = self.pieces = 0
        self.exhausted = False
        self._stream = self._pieces(split, text_key, carry_keys, num_shards, shard_index)

    def _pieces(self, split, text_key, carry_keys, num_shards, shard_index):
        for path in self.files:
            self.digest.update(b"\0file\0")
            for _, number, raw in iter_lines(Shard(path)):
                self.digest.update(raw)
                if not raw.strip():
                    self.blank += 1
                    continue
                try:
                    text, extra = _text_and_carried(parse_line(raw), text_key, carry_keys)
                except LineError as e:
                    self.bad.handle(path, number, e)
                    continue
                mine = self.records % num_shards == shard_index
                self.records += 1
                if mine:
                    self.in_shard += 1
                    pieces = split(text)
                    for k, piece in enumerate(pieces):
                        self.pieces += 1
                        yield piece, (extra if len(pieces) == 1 else dict(extra, piece=k, pieces=len(pieces)))
        self.exhausted = True

    def take(self, n):
        """The next ``n`` pieces as (texts, extras); fewer at the end of the input."""
        got = list(itertools.islice(self._stream, n))
        return [t for t, _ in got], [e for _, e in got]

    def drain(self):
        """Read the rest of the input (counts and hash) without keeping a text."""
        for _ in self._stream:
            pass

    def sha256(self):
        return self.digest.copy().hexdigest()

    def info(self):
        return {
            "files": len(self.files),
            "input_sha256": self.sha256() if self.exhausted else None,
            "records": self.records,
            "blank_lines": self.blank,
            "skipped_lines": dict(self.bad.counts),
            "skipped_examples": self.bad.examples,
        }


def hash_input(files):
    """The sha256 ``ShardStream`` computes for the whole input, read in blocks (no parsing): for manifests of a
    version that recorded only the whole input's hash, checked before a resumed run skips anything."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(b"\0file\0")
        with open_binary(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _text_and_carried(record, text_key, carry_keys):
    if not isinstance(record, dict):
        raise LineError("not a JSON object", f"got {json_type(record)}")
    text = string_field(record, text_key)
    if not text.strip():
        raise LineError("empty text", f"key {text_key!r} is blank")
    return text, {k: record[k] for k in carry_keys if k in record}


def collection_stats(cols):
    stats = Counter()
    for c in cols:
        for e in c:
            stats["pairs"] += len(e.qa_list)
            stats["texts_without_pairs"] += not e.qa_list
            for q in e.qa_list:
                stats[pair_type(q)] += 1
    return stats


# Why 5 %: a healthy run fails almost never (greedy decoding of prompts cut to fit; a server's transient errors
# are retried), so a rate this high means something systematic: a server down or overloaded past its retries,
# the wrong model, prompts the server refuses. Each failed text also loses its place as a demonstration in the
# next round. Below it the run finishes and --resume retries the recorded failures; above it the run stops
# after the part where the rate was passed, instead of spending hours writing parts without pairs.
DEFAULT_MAX_FAILURE_RATE = 0.05
FAILURE_RATE_EXIT = 3  # tools/synthesize.py's exit status when the run stopped for --max-failure-rate


class OutputError(Exception):
    """An output that cannot be written; the message names the path and the system's reason."""


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
    manifest said so; the part is then made again, so the counts stay exact).

    A part is written in two steps: its record goes into the manifest as ``pending`` (with the sha256 of the
    content), then the file is renamed in, then the record becomes the part's own. Whichever step a kill
    interrupts, the file on disk matches either the pending record or the previous one."""
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


def _no_generation(prompts):
    raise AssertionError("a replay of earlier results asked for a generation")


def _earlier_results(path, texts, extras, failed, synth):
    """``{text index: (prompt, pairs)}`` of the earlier run that wrote ``path``, for every text that did not
    fail, or None when the file is not what that run made of these texts (then the part is made again).

    The file holds each text's pairs; the prompts are recovered by replaying the run on those pairs (a run is
    determined by them), which must give the file back."""
    try:
        with open(path, encoding="utf-8") as f:
            written = [json.loads(line) for line in f]
        order = entry_sources(len(texts), synth["rounds"])
        entries = [e for chain in written for e in chain]
        if len(entries) != len(order):
            return None
        failed = set(failed)
        known = {j: (None, None if j in failed else e["QA_list"]) for j, e in zip(order, entries)}
        replay = synthesize_part(texts, _no_generation, extras=extras, earlier=known, **synth)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if [c.to_json() for c in replay.collections] != written:
        return None
    return {j: (replay.prompts[j], pairs) for j, (_, pairs) in known.items() if pairs is not None}


def run(
    input_spec,
    output_dir,
    engine,
    rounds=1,
    text_key="text",
    max_model_len=4096,
    max_new_tokens=400,
    num_shards=1,
    shard_index=0,
    part_size=1000,
    resume=False,
    skip_bad_lines=False,
    carry_keys=("id", "source"),
    progress=None,
    max_failure_rate=DEFAULT_MAX_FAILURE_RATE,
    schedule="pipelined",
    max_in_flight=None,
):
    """Synthesize this shard; returns the summary dict (see ``format_summary``).

    Failed generations are recorded per part (``failed``: text indices in the part) and ``resume`` retries
    them. The run stops after a part when more than ``max_failure_rate`` of this run's generations failed
    (``summary["stopped"]``). ``progress(total)`` (optional) returns an object with ``update(n)`` and
    ``close()``; it is told about every text as its generation finishes (and about the texts kept from an
    earlier run). ``schedule``/``max_in_flight``: how each part's rounds are scheduled
    (rounds.synthesize_part); the files do not depend on them."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index {shard_index} not in [0, {num_shards})")
    if rounds < 1 or part_size < 1:
        raise ValueError("--rounds and --part-size must be at least 1")
    if not 0 <= max_failure_rate <= 1:
        raise ValueError(f"--max-failure-rate {max_failure_rate}: expected a fraction in [0, 1]")
    start = time.perf_counter()
    check_output_dir(output_dir)
    stream = ShardStream(
        input_spec,
        lambda text: split_long_text(text, max_model_len, max_new_tokens, engine.count_tokens),
        text_key,
        carry_keys,
        num_shards,
        shard_index,
        skip_bad_lines,
    )
    first = [stream.take(part_size)]  # a bad line in the first part stops the run before anything is written
    # Anything that changes which text lands in which part, or how pairs are made, must not change on resume.
    # The input's hash and counts are known once the stream has read it all (None until then); each part also
    # records the hash of the input up to its last text, so a resumed run checks the input part by part as it
    # streams it, and never skips a part made of other texts.
    layout = {
        "input": input_spec,
        "input_sha256": None,
        "text_key": text_key,
        "skip_bad_lines": skip_bad_lines,
        "rounds": rounds,
        "num_shards": num_shards,
        "shard_index": shard_index,
        "part_size": part_size,
        "max_model_len": max_model_len,
        "max_new_tokens": max_new_tokens,
        "records": None,
        "texts": None,
        **engine.describe(),
    }
    from_input = ("input_sha256", "records", "texts")
    manifest_path = os.path.join(output_dir, f"manifest-shard{shard_index:05d}.json")

    def changed(diff):
        return ValueError(
            f"{manifest_path}: --resume with different input or settings (the input changed); (old, new): {diff}"
        )

    old = {}
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as f:
            old = json.load(f)
        if resume:
            diff = {k: (old.get(k), v) for k, v in layout.items() if k not in from_input and old.get(k) != v}
            if diff:
                raise ValueError(f"{manifest_path}: --resume with different input or settings; (old, new): {diff}")
            if old.get("input_sha256") and any("input_sha256" not in q for q in old.get("parts", [])):
                whole = hash_input(stream.files)  # an earlier version's manifest: only the whole input is known
                if whole != old["input_sha256"]:
                    raise changed({"input_sha256": (old["input_sha256"], whole)})
            layout.update({k: old.get(k) for k in from_input})
    if not resume and os.path.isdir(output_dir):
        mine = re.compile(rf"shard{shard_index:05d}-part\d+\.jsonl")
        existing = sorted(f for f in os.listdir(output_dir) if mine.fullmatch(f))
        if existing:
            raise FileExistsError(f"{os.path.join(output_dir, existing[0])} exists; pass --resume to continue a run")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--output-dir {output_dir}: cannot create it ({_reason(e)})") from None
    # On resume, every record of the earlier run is kept until its part is looked at: a kill must not lose one.
    parts = [dict(q) for q in old.get("parts", [])] if resume else []

    def save_manifest(complete):
        manifest = dict(layout, parts=parts, complete=complete)
        _write(manifest_path, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "the manifest")

    def chunks():  # one part's texts at a time: the caller drops each before the next is read
        chunk = first.pop()
        while chunk[0]:
            yield chunk
            chunk = stream.take(part_size)

    synth = dict(
        rounds=rounds, max_model_len=max_model_len, max_new_tokens=max_new_tokens, count_tokens=engine.count_tokens
    )
    if not (resume and old):  # a resumed run keeps the earlier manifest until it has something to add
        save_manifest(False)
    stats, before = Counter(), Counter()
    stopped = None
    expected = -(-layout["texts"] // part_size) if layout["texts"] is not None else None  # known on resume
    usage_before = engine.usage.as_dict()
    bar = progress(layout["texts"]) if progress else None  # the total is known on resume only
    engine.on_progress = bar.update if bar else None
    try:
        for p, (part_texts, part_extras) in enumerate(chunks()):
            read = stream.sha256()  # the input up to this part's last text
            if expected is not None and p >= expected:  # the earlier run read all the input: it had fewer texts
                raise changed({"texts": (layout["texts"], f"more than {p * part_size}")})
            if p < len(parts):
                part = parts[p]
                if part.get("input_sha256", read) != read:
                    raise changed({f"input_sha256 up to part {p}": (part["input_sha256"], read)})
            else:
                part = {}
                parts.append(part)
            fresh = "file" not in part
            part.update(file=f"shard{shard_index:05d}-part{p:05d}.jsonl", texts=len(part_texts), input_sha256=read)
            if fresh:
                save_manifest(False)  # the part is known from here on, with the input it is made of
            path = os.path.join(output_dir, part["file"])
            earlier, retried = None, 0
            record = _record_of(part, path) if os.path.exists(path) else None
            if record is not None and not record.get("failed"):
                part.update(record, done=True)
                part.pop("pending", None)
                stats["skipped_texts"] += part["texts"]
                before.update(part.get("stats", {}))
                if bar:
                    bar.update(part["texts"])
                continue
            if record is not None:  # retry the texts whose generation failed, keep the others' pairs
                earlier = _earlier_results(path, part_texts, part_extras, record["failed"], synth)
                retried = len(record["failed"]) if earlier is not None else 0
            if earlier is None:  # made from scratch: whatever an earlier run recorded does not describe it
                for key in ("done", "stats", "failed", "sha256", "pending"):
                    part.pop(key, None)
            result = synthesize_part(
                part_texts,
                engine,
                extras=part_extras,
                earlier=earlier,
                schedule=schedule,
                max_in_flight=max_in_flight,
                **synth,
            )
            kept = len(part_texts) - result.generated
            if bar and kept:
                bar.update(kept)
            lines = [json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in result.collections]
            part_stats = collection_stats(result.collections) + Counter(failures=len(result.failed))
            written = {"stats": dict(part_stats), "failed": result.failed, "sha256": _sha256(lines)}
            part["pending"] = written
            save_manifest(False)
            _write(path, lines, "a part")
            del part["pending"]
            part.update(written, done=True)
            save_manifest(False)
            stats.update(
                texts=result.generated,
                skipped_texts=kept,
                retried=retried,
                failures=len(result.failed),
                demonstration_prompts=result.demonstrations,
                prefix_extending=result.extending,
            )
            if stats["texts"] and stats["failures"] > max_failure_rate * stats["texts"]:
                stopped = p
                break
    finally:
        engine.on_progress = None
        if bar:
            bar.close()
    stream.drain()  # a stopped run still counts the rest (no text kept), so its summary and manifest are whole
    made = -(-stream.pieces // part_size)  # the parts this input has
    new = {"input_sha256": stream.sha256(), "records": stream.in_shard, "texts": stream.pieces}
    diff = {k: (layout[k], v) for k, v in new.items() if layout[k] not in (None, v)}
    if len(parts) > made:  # an earlier run (killed before it read all the input) had parts beyond its end
        diff["parts"] = (len(parts), made)
    if resume and diff:
        raise changed(diff)
    layout.update(new)
    save_manifest(all(part.get("done") for part in parts) and len(parts) == made)
    files = Counter()
    for part in parts:
        if part.get("done"):
            files.update(part.get("stats", {}), texts=part["texts"], parts=1)
    usage = {k: v - usage_before[k] for k, v in engine.usage.as_dict().items()}
    return dict(
        stats,
        **stream.info(),
        records_in_shard=stream.in_shard,
        pieces=stream.pieces,
        parts=made,
        written=dict(files),
        usage=usage,
        done_before=dict(before),
        max_failure_rate=max_failure_rate,
        stopped=stopped,
        seconds=time.perf_counter() - start,
        engine=engine.describe(),
    )


def failure_rate_error(s):
    """The error line of a run stopped for --max-failure-rate, or None."""
    if s["stopped"] is None:
        return None
    return (
        f"{s['failures']} of {s['texts']} generations failed ({s['failures'] / s['texts']:.1%}), more than "
        f"--max-failure-rate {s['max_failure_rate']:g}: the run stopped with {s['written'].get('parts', 0)} of "
        f"{s['parts']} parts written; the failed texts are recorded, rerun with --resume to retry them and go on"
    )


def format_summary(s):
    files = s["written"]
    n = max(files.get("texts", 0), 1)
    u, secs = s["usage"], max(s["seconds"], 1e-9)
    # Model engines report their tokenizer's counts; the rules engine has none unless --tokenizer is given.
    estimate = (
        " (words x1.5 estimate)"
        if s["engine"]["length_guard"] == "words x1.5" and s["engine"]["engine"] == "rules"
        else ""
    )
    generated, failures = s.get("texts", 0), s.get("failures", 0)
    retried = f" ({s['retried']} of them failed before and were retried)" if s.get("retried") else ""
    lines = [
        f"texts          {generated} synthesized{retried}, {s.get('skipped_texts', 0)} skipped as done "
        f"({s['records_in_shard']} records of {s['records']} in this shard, {s['pieces']} texts after splitting)",
        f"files          {files.get('parts', 0)} of {s['parts']} parts written, {files.get('texts', 0)} texts; "
        "the counts below are theirs",
        f"pairs          {files.get('pairs', 0)} ({files.get('pairs', 0) / n:.2f} per text; "
        f"{files.get('texts_without_pairs', 0)} texts without pairs)",
        f"pair types     free-form {files.get('free-form', 0)}, options {files.get('options', 0)}, "
        f"CoT {files.get('cot', 0)}",
        f"failures       {failures} generations of {generated} in this run ({failures / max(generated, 1):.1%}; "
        f"--max-failure-rate {s['max_failure_rate']:g}); {files.get('failures', 0)} failed texts in the files"
        + (": --resume retries them" if files.get("failures") else ""),
        f"tokens{estimate:<9} prompt {u['prompt_tokens']:,} ({u['prompt_tokens'] / secs:,.0f}/s), "
        f"generated {u['generated_tokens']:,} ({u['generated_tokens'] / secs:,.0f}/s)",
        f"time           {secs:.1f} s ({generated / secs:,.1f} texts/s; {u['seconds']:.1f} s in the engine)",
    ]
    shown = s.get("demonstration_prompts", 0)
    if shown or u.get("cache_reports"):
        extending = s.get("prefix_extending", 0)
        cache = (
            f"prefix cache {u['cached_prompt_tokens']:,} of {u['prompt_tokens']:,} prompt tokens "
            f"({u['cached_prompt_tokens'] / max(u['prompt_tokens'], 1):.1%}"
            + (
                f"; reported for {u['cache_reports']} of {u['prompts']} generations)"
                if u["cache_reports"] < u["prompts"]
                else ")"
            )
            if u.get("cache_reports")
            else "prefix cache not reported by this engine"
        )
        lines.insert(
            -1,
            f"prefixes       {extending} of {shown} prompts with a demonstration start with their chain's last "
            f"prompt + generation; {cache}",
        )
    if s.get("skipped_texts"):
        b = s["done_before"]
        lines.append(
            f"done before    {s['skipped_texts']} texts: {b.get('pairs', 0)} pairs, {b.get('failures', 0)} "
            "failures in the parts skipped as done (from the manifest)"
        )
    if s["skipped_lines"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s["skipped_lines"].items()))
        lines.append(f"skipped lines  {sum(s['skipped_lines'].values())}: {kinds}")
        lines += [f"  {e}" for e in s["skipped_examples"]]
    return "\n".join(lines)


class Progress:
    """A tqdm bar over texts on a terminal; otherwise a log line every ``log_interval`` texts. ``total`` is None
    when it is not known yet (the input is streamed). Thread-safe (the openai engine reports from its worker
    threads)."""

    def __init__(self, total, log_interval=1000, desc="synthesize"):
        self.total, self.done, self.log_interval = total, 0, max(1, log_interval)
        self.start, self.lock, self.bar = time.time(), threading.Lock(), None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="text", desc=desc, dynamic_ncols=True)

    def update(self, n):
        with self.lock:
            before, self.done = self.done, self.done + n
            if self.bar is not None:
                self.bar.update(n)
            elif self.done // self.log_interval > before // self.log_interval or self.done == self.total:
                rate = self.done / max(time.time() - self.start, 1e-9)
                of = f"/{self.total}" if self.total is not None else ""
                print(f"synthesized {self.done}{of} texts ({rate:.2f} texts/s)", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
