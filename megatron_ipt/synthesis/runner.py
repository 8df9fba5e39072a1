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

``manifest-shard{S:05d}.json`` (manifest.py) records the layout and every part, so that ``--resume`` skips the
finished parts, retries the failed texts, and refuses a changed input or changed settings.
"""

import hashlib
import itertools
import json
import sys
import threading
import time
from collections import Counter

from megatron_ipt.formats.wire import pair_type
from megatron_ipt.io.cli import format_seconds
from megatron_ipt.io.inputs import Shard, expand_inputs, iter_lines
from megatron_ipt.io.jsonl import BadLines, LineError, json_type, parse_line, string_field

from .config import SynthesisConfig
from .manifest import Manifest, check_output_dir
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


FAILURE_RATE_EXIT = 3  # tools/synthesize.py's exit status when the run stopped for --max-failure-rate


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


def run(config: SynthesisConfig, engine, progress=None):
    """Synthesize this shard (``config``) with ``engine``; returns the summary dict (see ``format_summary``).

    Failed generations (the engine did not answer) are recorded per part (``failed``: text indices in the part)
    and ``config.resume`` retries them; a text answered with zero pairs is counted as ``texts_without_pairs``, no
    failure (the corpus keeps it raw). The run stops after a part when more than ``config.max_failure_rate`` of this run's generations failed
    (``summary["stopped"]``). ``progress(total)`` (optional) returns an object with ``update(n)`` and
    ``close()``; it is told about every text as its generation finishes (and about the texts kept from an
    earlier run). ``config.schedule``/``max_in_flight``: how each part's rounds are scheduled
    (rounds.synthesize_part); the files do not depend on them."""
    c = config
    start = time.perf_counter()
    check_output_dir(c.output_dir)
    stream = ShardStream(
        c.input,
        lambda text: split_long_text(text, c.max_model_len, c.max_new_tokens, engine.count_tokens),
        c.text_key,
        c.carry_keys,
        c.num_shards,
        c.shard_index,
        c.skip_bad_lines,
    )
    first = [stream.take(c.part_size)]  # a bad line in the first part stops the run before anything is written
    # Anything that changes which text lands in which part, or how pairs are made, must not change on resume.
    # The input's hash and counts are known once the stream has read it all (None until then); each part also
    # records the hash of the input up to its last text, so a resumed run checks the input part by part as it
    # streams it, and never skips a part made of other texts.
    layout = {
        "input": c.input,
        "input_sha256": None,
        "text_key": c.text_key,
        "skip_bad_lines": c.skip_bad_lines,
        "rounds": c.rounds,
        "num_shards": c.num_shards,
        "shard_index": c.shard_index,
        "part_size": c.part_size,
        "max_model_len": c.max_model_len,
        "max_new_tokens": c.max_new_tokens,
        "records": None,
        "texts": None,
        **engine.describe(),
    }
    manifest = Manifest(c.output_dir, c.shard_index, layout, c.resume, stream.files)

    def chunks():  # one part's texts at a time: the caller drops each before the next is read
        chunk = first.pop()
        while chunk[0]:
            yield chunk
            chunk = stream.take(c.part_size)

    synth = dict(
        rounds=c.rounds,
        max_model_len=c.max_model_len,
        max_new_tokens=c.max_new_tokens,
        count_tokens=engine.count_tokens,
    )
    stats, before = Counter(), Counter()
    stopped = None
    usage_before = engine.usage.as_dict()
    bar = progress(manifest.layout["texts"]) if progress else None  # the total is known on resume only
    engine.on_progress = bar.update if bar else None
    try:
        for p, (part_texts, part_extras) in enumerate(chunks()):
            part = manifest.part(p, len(part_texts), stream.sha256())  # the input up to this part's last text
            earlier, retried = None, 0
            record = manifest.record(part)
            if record is not None and not record.get("failed"):
                manifest.keep(part, record)
                stats["skipped_texts"] += part["texts"]
                before.update(part.get("stats", {}))
                if bar:
                    bar.update(part["texts"])
                continue
            if record is not None:  # retry the texts whose generation failed, keep the others' pairs
                earlier = _earlier_results(manifest.file(part), part_texts, part_extras, record["failed"], synth)
                retried = len(record["failed"]) if earlier is not None else 0
            if earlier is None:
                manifest.forget(part)
            result = synthesize_part(
                part_texts,
                engine,
                extras=part_extras,
                earlier=earlier,
                schedule=c.resolved_schedule,
                max_in_flight=c.max_in_flight,
                **synth,
            )
            kept = len(part_texts) - result.generated
            if bar and kept:
                bar.update(kept)
            lines = [json.dumps(col.to_json(), ensure_ascii=False) + "\n" for col in result.collections]
            part_stats = collection_stats(result.collections)
            # a failed text has no pairs either; "texts without pairs" are those answered with none, failures apart
            part_stats["texts_without_pairs"] -= len(result.failed)
            part_stats = +part_stats + Counter(failures=len(result.failed))
            manifest.write(part, lines, part_stats, result.failed)
            stats.update(
                texts=result.generated,
                skipped_texts=kept,
                retried=retried,
                failures=len(result.failed),
                texts_without_pairs=len(result.without_pairs),
                demonstration_prompts=result.demonstrations,
                prefix_extending=result.extending,
            )
            if stats["texts"] and stats["failures"] > c.max_failure_rate * stats["texts"]:
                stopped = p
                break
    finally:
        engine.on_progress = None
        if bar:
            bar.close()
    stream.drain()  # a stopped run still counts the rest (no text kept), so its summary and manifest are whole
    made = manifest.finish(stream.sha256(), stream.in_shard, stream.pieces)
    usage = {k: v - usage_before[k] for k, v in engine.usage.as_dict().items()}
    return dict(
        stats,
        **stream.info(),
        records_in_shard=stream.in_shard,
        pieces=stream.pieces,
        parts=made,
        written=dict(manifest.written()),
        usage=usage,
        done_before=dict(before),
        max_failure_rate=c.max_failure_rate,
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
        f"{files.get('texts_without_pairs', 0)} texts without pairs, {files.get('failures', 0)} failed)",
        f"pair types     free-form {files.get('free-form', 0)}, options {files.get('options', 0)}, "
        f"CoT {files.get('cot', 0)}",
        f"failures       {failures} generations of {generated} in this run ({failures / max(generated, 1):.1%}; "
        f"--max-failure-rate {s['max_failure_rate']:g}); {files.get('failures', 0)} failed texts in the files"
        + (": --resume retries them" if files.get("failures") else ""),
        f"without pairs  {s.get('texts_without_pairs', 0)} texts of {generated} in this run answered with no pairs "
        "(kept raw in the corpus; not failures)",
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
    """A tqdm bar over texts on a terminal; otherwise a log line every ``log_interval`` texts, and at least every
    ``PROGRESS_SECONDS`` while texts finish (a CPU engine at a minute a text would otherwise be silent for hours),
    with an ETA when the total is known. ``total`` is None when it is not known yet (the input is streamed).
    Thread-safe (the openai engine reports from its worker threads)."""

    PROGRESS_SECONDS = 60.0

    def __init__(self, total, log_interval=1000, desc="synthesize"):
        self.total, self.done, self.log_interval = total, 0, max(1, log_interval)
        self.start, self.lock, self.bar = time.time(), threading.Lock(), None
        self.last_line = self.start
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="text", desc=desc, dynamic_ncols=True)

    def update(self, n):
        with self.lock:
            before, self.done = self.done, self.done + n
            if self.bar is not None:
                self.bar.update(n)
                return
            now = time.time()
            crossed = self.done // self.log_interval > before // self.log_interval
            if crossed or self.done == self.total or now - self.last_line >= self.PROGRESS_SECONDS:
                self.last_line = now
                rate = self.done / max(now - self.start, 1e-9)
                of = f"/{self.total}" if self.total is not None else ""
                eta = ""
                if self.total is not None and self.done < self.total and rate > 0:
                    eta = f", ETA {format_seconds((self.total - self.done) / rate)}"
                print(f"synthesized {self.done}{of} texts ({rate:.2f} texts/s{eta})", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
